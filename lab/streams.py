"""Three ways to hand the same checkpoint to a model's `load_weights`, and the
evidence they give (audit/judge.py turns it into a verdict). Liveness also
watches a real loader's stream as it is (the proofs', copy=False).

- private copies: every tensor is the consumer's own (the reference load);
- one reused buffer: every tensor is a view into a single buffer that is
  overwritten with a sentinel before the next tensor arrives, and once more
  after the last, like a streamer whose memory limit fits one tensor. A
  `load_weights` that keeps a yielded tensor past its step loads the sentinel
  or a later tensor's bytes;
- liveness: private copies tracked by weak reference. A `load_weights` that
  collects the iterator keeps them all alive at once, which is the whole
  checkpoint in host memory per worker with a copying loader.

Only torch here, so the unit tests (audit/test_audit.py) run it on toy loaders.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator

import torch

Weights = Iterable[tuple[str, torch.Tensor]]

# 0xFF bytes: NaN in every floating format, -1 in every signed integer.
SENTINEL_BYTE = 0xFF


def private_copies(source: Callable[[], Weights]) -> Iterator[tuple[str, torch.Tensor]]:
    for name, tensor in source():
        yield name, tensor.clone()


def reused_buffer(source: Callable[[], Weights]) -> Iterator[tuple[str, torch.Tensor]]:
    tensors = list(source())
    size = max((t.numel() * t.element_size() for _, t in tensors), default=0)
    buffer = torch.empty(size, dtype=torch.uint8)
    for name, tensor in tensors:
        buffer.fill_(SENTINEL_BYTE)
        nbytes = tensor.numel() * tensor.element_size()
        view = buffer[:nbytes].view(tensor.dtype).view(tensor.shape)
        view.copy_(tensor)
        yield name, view
    buffer.fill_(SENTINEL_BYTE)


class Liveness:
    """Private copies (or, with copy=False, the source's own tensors); counts
    how many of them are alive after each step of the consumer.

    A weak reference follows the tensor object, not its storage: a consumer
    that keeps only a view of a yielded tensor is missed here, and caught by
    the reused buffer instead."""

    def __init__(self, source: Callable[[], Weights], copy: bool = True):
        self.source, self.copy = source, copy
        self.refs: list[tuple[weakref.ref, int]] = []
        self.peak_alive = self.peak_bytes = 0

    def _count(self) -> None:
        alive = [nbytes for ref, nbytes in self.refs if ref() is not None]
        self.peak_alive = max(self.peak_alive, len(alive))
        self.peak_bytes = max(self.peak_bytes, sum(alive))

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in self.source():
            mine = tensor.clone() if self.copy else tensor
            del tensor  # hold no reference of this frame's own past the yield
            self.refs.append((weakref.ref(mine), mine.numel() * mine.element_size()))
            yield name, mine
            del mine
            self._count()  # the consumer has had its step: what did it keep?
        self._count()

    @property
    def total(self) -> int:
        return len(self.refs)

    @property
    def total_bytes(self) -> int:
        return sum(nbytes for _, nbytes in self.refs)


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, as bytes (NaN compares equal to itself)."""
    state = {}
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        state[name] = data.view(torch.uint8).clone() if data.numel() else data.clone()
    return state


def differing(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> list[str]:
    return sorted(name for name, ref in reference.items()
                  if name not in state or not torch.equal(state[name], ref))


def zero_state(module: torch.nn.Module) -> None:
    """A fresh model's storage is uninitialized; zero it so two loads compare
    only what load_weights wrote."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.zero_()


def force_streamer_views() -> None:
    """runai-model-streamer 0.17.0 with owned=False in this process: views
    into its reused buffers, as 0.15.7 always gave. vLLM 0.21 calls
    stream_files without `owned`, so the streamer's default is changed;
    vLLM is untouched."""
    import functools

    from runai_model_streamer import SafetensorsStreamer

    SafetensorsStreamer.stream_files = functools.partialmethod(
        SafetensorsStreamer.stream_files, owned=False)
