"""The autograd binding: a torch.autograd.Function with a separate setup_context (so that torch.func transforms
work) whose forward and backward call the launchers directly in plain eager mode and the triton_ops of
kernels.depthwise.ops under torch.compile, torch.func transforms or any other tracing. No double backward.

Under torch.func.vmap (K members: stacked weights, a batch per member) the Function generates its vmap rule
(generate_vmap_rule): forward and backward run on vmap's batched tensors, so they take the triton_ops, whose own
vmap rules fold the members into the channels (kernels.depthwise.ops). A vmap staticmethod would fold only the
forward: under vmap(grad(f)), the trainer's composition, backward is called with batched tensors either way.

backward_pass chooses how the gradients are computed (rules.backward_variant): in one pass where it can run and
measured faster, else the weight pass (whose grad_z, where a relu or a scale changes the gradient, feeds the
grad-input pass) and then the grad-input pass; only the passes the needed gradients ask for run.
"""

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from kernels.depthwise import launchers, ops
from kernels.depthwise.helpers import is_channels_last
from kernels.depthwise.rules import FUSED_SCHEDULE, backward_variant

_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def is_eager(*tensors) -> bool:
    """True when the launchers may run directly: no compilation or tracing, no functorch wrappers."""
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return False
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return all(t is None or (type(t) in _PLAIN_TENSOR_TYPES and not wrapped(t)) for t in tensors)


def backward_pass(grad_y, x, weight, scale, shift, stride: int, relu: bool, needs, eager: bool):
    """(grad_x, grad_weight, grad_scale, grad_shift) of y = relu(dwconv(x) * scale + shift), None where
    needs (four bools, for x, weight, scale, shift) is False: the launchers (eager) or the triton_ops, in one
    pass where backward_variant says so, else the weight pass (whose grad_z, where a relu or a scale changes
    the gradient, feeds the grad-input pass) and then the grad-input pass."""
    need_x, need_w, need_scale, need_shift = needs
    # The gradient w.r.t. the conv output differs from grad_y only through relu's mask and the scale.
    changes_grad = relu or scale is not None
    N, C, H, W = x.shape
    variant = "split"
    if need_x and need_w:
        variant = backward_variant(is_channels_last(x), x.dtype, N, C, H, W, stride, weight.shape[-1], changes_grad)
    if variant != "split":
        grad_x, grad_w, grad_shift = (launchers.launch_bwd_fused if eager else ops.dwconv_bwd_fused)(
            grad_y, x, weight, shift, schedule=FUSED_SCHEDULE[variant])
        return grad_x, grad_w, None, grad_shift if need_shift else None
    need_weight_pass = need_w or need_scale or need_shift or (need_x and changes_grad)
    store_gz = need_x and changes_grad
    grad_x = grad_w = grad_scale = grad_shift = None
    grad_z = grad_y
    if need_weight_pass:
        args = (grad_y, x, weight, scale, shift, stride, relu, store_gz)
        grad_w, grad_scale, grad_shift, gz = (launchers.launch_bwd_weight if eager else ops.dwconv_bwd_weight)(*args)
        if store_gz:
            grad_z = gz
    if need_x:
        grad_x = (launchers.launch_bwd_input if eager else ops.dwconv_bwd_input)(grad_z, weight, x, stride)
    return (
        grad_x,
        grad_w if need_w else None,
        grad_scale if need_scale else None,
        grad_shift if need_shift else None,
    )


class DepthwiseConv2dFn(torch.autograd.Function):
    """Triton forward and backward; setup_context is separate so that torch.func transforms work."""

    generate_vmap_rule = True  # vmap runs forward and backward batched; the triton_ops fold the members

    @staticmethod
    def forward(x, weight, scale, shift, stride, relu):
        if is_eager(x, weight, scale, shift):
            return launchers.launch_fwd(x, weight, scale, shift, stride, relu)
        return ops.dwconv_fwd(x, weight, scale, shift, stride, relu)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, scale, shift, stride, relu = inputs
        ctx.save_for_backward(x, weight, scale, shift)
        ctx.stride, ctx.relu = stride, relu

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, scale, shift = ctx.saved_tensors
        needs = ctx.needs_input_grad[:4]
        eager = is_eager(grad_y, x, weight, scale, shift)
        # no_grad: the ops have no derivative (no double backward), and under torch.func.grad the saved
        # tensors still track the outer level, which would send the ops through their autograd wrapper.
        with torch.no_grad():
            grads = backward_pass(grad_y, x, weight, scale, shift, ctx.stride, ctx.relu, needs, eager)
        return (*grads, None, None)
