"""Layers appended to a parsed network before the build (``build_engine(head=...)``).

``greedy``: TopK(1) over a ``decoder_step`` network's ``logprobs``, so one step
engine chooses its token on the GPU (``edge/trt/greedy_steps.py`` feeds it back).
``add_topk`` and ``TopKOperation.MAX`` exist in TensorRT 8.2 through 11 (NVIDIA/
TensorRT ``python/src/infer/pyGraph.cpp`` on release/8.2 and release/11.0); the
axes argument is a bit mask.
"""


def add_greedy_head(trt, network):
    """Append TopK(1) over the ``logprobs`` output of a ``decoder_step`` network:
    extra outputs ``best_logprob`` float32 [N,1] and ``best_token`` int32 [N,1]
    (the first maximum, as the caption graph's TopK). A step engine so headed
    feeds its own ``best_token`` back as the next ``token`` on the GPU."""
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    logprobs = [t for t in outputs if t.name == "logprobs"][0]
    layer = network.add_topk(logprobs, trt.TopKOperation.MAX, 1, 1 << 1)  # axis 1 as a mask
    for index, name in ((0, "best_logprob"), (1, "best_token")):
        tensor = layer.get_output(index)
        tensor.name = name
        network.mark_output(tensor)


HEADS = {"greedy": (add_greedy_head, ["best_logprob", "best_token"])}
