# Every target runs in a local virtual environment (.venv) that the first use creates from pyproject.toml.
# PYTHON=python3 (or any interpreter that already has the packages) uses that instead and installs nothing.
VENV := .venv
ifeq ($(origin PYTHON), undefined)
PYTHON := $(VENV)/bin/python
SETUP := $(VENV)/.installed
else
SETUP :=
endif

# MODEL, DATASET, DATA and OUT reach the trainer only when given (on the command line or in the environment): with
# resume=true the run's config.json supplies them, and otherwise the trainer's defaults are these same values.
# OUT's default is also the run the tools read (RUN).
MODEL ?= resnet18
DATASET ?= cifar10
DATA ?= .data
OUT ?= runs/$(MODEL)-$(DATASET)
# $(call given,VAR,key): key=$(VAR) when VAR was given, else nothing.
given = $(if $(filter command line environment,$(origin $(1))),$(2)=$($(1)))
TRAIN_KEYS = $(strip $(call given,MODEL,model) $(call given,DATASET,dataset) $(call given,DATA,data) \
                     $(call given,OUT,out))
ARGS ?=
RUN ?= $(OUT)
IMAGES ?=
# GPUS=N (N > 1): `make train` runs N data-parallel processes through torchrun (python -m torch.distributed.run);
# TORCHRUN holds its rendezvous options (the default is one node; see the README's "Several GPUs").
GPUS ?= 1
TORCHRUN ?= --standalone
TRAIN_LAUNCH = $(if $(filter-out 0 1,$(GPUS)),$(PYTHON) -m torch.distributed.run $(TORCHRUN) --nproc_per_node=$(GPUS) -m train,$(PYTHON) -m train)

.PHONY: train test bench lint nets evaluate predict export plot

train: $(SETUP)
	$(TRAIN_LAUNCH) $(TRAIN_KEYS) $(ARGS)

# With pytest-xdist (the test extra) the suite runs in one process per core, each torch on one thread
# (tests/conftest.py), the GPU tests in one process; without it (PYTHON=python3 on a machine that lacks it), in one.
TEST_WORKERS = $(shell $(PYTHON) -c "import xdist" 2>/dev/null && echo "-n auto --dist loadgroup")

test: $(SETUP)
	$(PYTHON) -m pytest -q --benchmark-disable $(TEST_WORKERS) $(ARGS)

bench: $(SETUP)
	$(PYTHON) -m bench $(ARGS)

lint: $(SETUP)
	$(PYTHON) -m ruff check .

nets: $(SETUP)
	$(PYTHON) -m nets

# The tools read a run directory (RUN, by default the OUT of `make train`); see the README's Tools section.
evaluate: $(SETUP)
	$(PYTHON) -m train.evaluate run=$(RUN) $(ARGS)

predict: $(SETUP)
	$(PYTHON) -m train.predict run=$(RUN) images=$(IMAGES) $(ARGS)

export: $(SETUP)
	$(PYTHON) -m train.export run=$(RUN) $(ARGS)

plot: $(SETUP)
	$(PYTHON) -m train.plot run=$(RUN) $(ARGS)

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test,lint]'
	touch $@
