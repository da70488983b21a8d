"""A stand-in for a GPU on a CPU-only machine: the model on PyTorch's ``meta``
device (tensors with shapes and no data).

Inside ``MetaReads()`` an op that mixes a meta tensor with a CPU tensor fails
("Expected all tensors to be on the same device"), as a CUDA tensor meeting a
CPU one does (some of PyTorch's meta kernels would let it pass: ``index_select``
with a CPU index), so any tensor a function leaves on the CPU while the model
is elsewhere is caught. What CUDA allows is allowed: a 0-dim CPU tensor beside
a meta one, indexing a meta tensor with CPU indices, explicit copies. Reading
values back is allowed, as a GPU allows it with a copy: ``.cpu()``,
``.to("cpu")``, ``.numpy()``, ``.tolist()``, ``.item()``, ``float()``, ``int()``
and ``bool()`` of a meta tensor give zeros (``False``) instead of failing for
want of data.
"""
import torch
from torch.overrides import TorchFunctionMode

META = torch.device("meta")


def _zeros_like_on_cpu(tensor):
    return torch.zeros(tensor.shape, dtype=tensor.dtype)


class MetaReads(TorchFunctionMode):
    """Within: reads of meta tensors give zeros; everything else runs as usual."""

    READS = {torch.Tensor.tolist: lambda t: _zeros_like_on_cpu(t).tolist(),
             torch.Tensor.item: lambda t: _zeros_like_on_cpu(t).item(),
             torch.Tensor.__bool__: lambda t: False,
             torch.Tensor.__float__: lambda t: 0.0,
             torch.Tensor.__int__: lambda t: 0,
             torch.Tensor.numpy: lambda t: _zeros_like_on_cpu(t).numpy(),
             torch.Tensor.cpu: _zeros_like_on_cpu}

    # explicit copies (Module.to's check among them), and indexing (CUDA moves
    # CPU indices to the indexed tensor)
    MAY_MIX = (torch.Tensor.to, torch.Tensor.copy_, torch._has_compatible_shallow_copy_type,
               torch.Tensor.__getitem__, torch.Tensor.__setitem__)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else None
        if isinstance(target, torch.Tensor) and target.device.type == "meta":
            if func in self.READS:
                return self.READS[func](target)
            if func is torch.Tensor.to and _to_cpu(args[1:], kwargs):
                return _zeros_like_on_cpu(target).to(*args[1:], **kwargs)
        if func not in self.MAY_MIX:
            _check_one_device(func, list(args) + list(kwargs.values()))
        return func(*args, **kwargs)


def _tensors(values):
    """Every tensor in nested lists, tuples and dicts."""
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            for inner in _tensors(value):
                yield inner
        elif isinstance(value, dict):
            for inner in _tensors(value.values()):
                yield inner


def _check_one_device(func, values):
    """Raise as CUDA does when ``func``'s tensors are on meta and on the CPU (0-dim
    CPU tensors excepted: CUDA ops take them as scalars)."""
    devices = set(t.device.type for t in _tensors(values) if t.device.type == "meta" or t.dim())
    if "meta" in devices and "cpu" in devices:
        raise RuntimeError("Expected all tensors to be on the same device, but found at least "
                           "two devices, meta and cpu (in %s)" % getattr(func, "__name__", func))


def _to_cpu(args, kwargs):
    """Whether ``Tensor.to(*args, **kwargs)`` names the CPU as its device."""
    for value in list(args) + [kwargs.get("device")]:
        if isinstance(value, (str, torch.device)) and torch.device(value).type == "cpu":
            return True
    return False
