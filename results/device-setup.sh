# Sourced from the repository root by the device jobs (results/h200-*.sh): records the GPU and the versions in
# the job's log, decodes the JPEG copy once into its cache (rather than in every run at once), and gives each
# process 4 Inductor compile threads (several processes compile at once on 16 cores).
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -c "from data.cifar import load_cifar; load_cifar('cifar10', '.data/cifar10-jpeg.tar.gz', download=False)"
export TORCHINDUCTOR_COMPILE_THREADS=4
run="PYTHON=python3 DATA=.data/cifar10-jpeg.tar.gz"  # the make arguments every run shares

left() { echo $((${END_AT:-0} - $(date +%s))); }  # seconds until END_AT, the epoch second to be done by
stamp() { echo "$(date -u +%H:%M:%S) $*"; }

# wait_compiled N PID DIR: until N of the logs in DIR say "compiled in", PID has ended, or 600 s have passed.
wait_compiled() {
    local _
    for _ in $(seq 600); do
        (($(grep -l "compiled in" "$3"/*.log 2>/dev/null | wc -l) >= $1)) && return
        kill -0 "$2" 2>/dev/null || return
        sleep 1
    done
}

# gpu_tests_start DIR [PATH...]: `pytest -m gpu` over PATHs (default: tests) in the background, its log in
# DIR/gpu-tests.log, its pid in $tests; gpu_tests_wait DIR: wait for it and stamp the log's last line.
gpu_tests_start() {
    local dir=$1; shift
    python3 -m pytest -q -m gpu "${@:-tests}" >"$dir/gpu-tests.log" 2>&1 &
    tests=$!
}
gpu_tests_wait() { wait "$tests"; stamp "GPU tests ended: $(tail -n 1 "$1/gpu-tests.log")"; }

# gpu_tests_holding LOCK DIR [PATH...]: hold LOCK (fd 8), so that runs and benchmarks waiting on it use the GPU
# after the tests, and start the tests (gpu_tests_start DIR PATH...); gpu_tests_release DIR: wait for them
# (gpu_tests_wait) and free LOCK.
gpu_tests_holding() {
    exec 8>"$1"; shift
    flock 8 && stamp "holding the GPU for the tests"
    gpu_tests_start "$@"
}
gpu_tests_release() { gpu_tests_wait "$1"; flock -u 8; exec 8>&-; }
