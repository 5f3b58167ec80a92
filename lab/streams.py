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

import gc
import itertools
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Set

import torch

Weights = Iterable[tuple[str, torch.Tensor]]

# 0xFF bytes: NaN in every floating format, -1 in every signed integer.
SENTINEL_BYTE = 0xFF
# What the fixed models keep, by design, until their language model is loaded:
# Llama 4's vision tower and projector, Nano VL's vision, projector and sound.
BUFFERED_BY_DESIGN = ("vision_model.", "multi_modal_projector.", "mlp1.", "sound_encoder.")


# type -> 1 tensor, 2 untyped storage, 0 neither. isinstance(obj, torch.Tensor)
# costs about 0.25 us an object (torch's metaclass); a vLLM process tracks
# ~750,000 objects, so the type is looked up here once per type instead.
_KIND: dict[type, int] = {}


def _kind(tp: type) -> int:
    kind = _KIND.get(tp)
    if kind is None:
        kind = _KIND[tp] = (1 if issubclass(tp, torch.Tensor)
                            else 2 if issubclass(tp, torch.UntypedStorage) else 0)
    return kind


def host_storages(exclude: Set[int] = frozenset(),
                  objects: Iterable[object] | None = None) -> dict[int, int]:
    """{data pointer: bytes} of every CPU tensor storage among `objects`
    (default: every object the garbage collector tracks, which covers
    tensors and untyped storages), less those in `exclude`. Views share
    their storage and count once."""
    storages = {}
    for obj in gc.get_objects() if objects is None else objects:
        kind = _KIND.get(type(obj))
        if kind is None:
            kind = _kind(type(obj))
        if not kind:
            continue
        try:
            if obj.device.type != "cpu":
                continue
            storage = obj.untyped_storage() if kind == 1 else obj
            ptr = storage.data_ptr()
        except (RuntimeError, NotImplementedError):
            continue  # sparse and other storage-less tensors
        if ptr and ptr not in exclude:
            storages[ptr] = storage.nbytes()
    return storages


def storage_holders() -> list[object]:
    """The tensors and untyped storages the garbage collector tracks now."""
    return [obj for obj in gc.get_objects() if _KIND.get(type(obj)) or _kind(type(obj))]


def storages_of(module: torch.nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr()
            for t in [*module.parameters(), *module.buffers()] if t.device.type == "cpu"}


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

    def __init__(self, source: Callable[[], Weights], copy: bool = True,
                 model: torch.nn.Module | None = None,
                 buffered: tuple[str, ...] = BUFFERED_BY_DESIGN):
        self.source, self.copy, self.model, self.buffered = source, copy, model, buffered
        self.refs: list[tuple[weakref.ref, int]] = []
        self.peak_alive = self.peak_bytes = 0
        # With a model: the most bytes of the stream held after a step, and
        # the steps that held more than allowed: the groups buffered by design
        # seen so far plus twice the largest tensor so far.
        self.peak_held_bytes = 0
        self.overheld: list[str] = []
        self._largest = self._buffered_bytes = 0
        self._before: set[int] = set()
        self._old: list[weakref.ref] = []
        # Seconds spent weighing, for callers that time the load around it.
        self.probe_s = 0.0

    def _count(self, name: str) -> None:
        alive = [nbytes for ref, nbytes in self.refs if ref() is not None]
        self.peak_alive = max(self.peak_alive, len(alive))
        self.peak_bytes = max(self.peak_bytes, sum(alive))
        if self.model is None:
            return
        start = time.perf_counter()
        # What came to life since the stream began (the collector's unfrozen
        # objects), and the older holders, which may point at new storage now.
        old = (obj for obj in (ref() for ref in self._old) if obj is not None)
        objects = itertools.chain(gc.get_objects(), old)
        held = sum(host_storages(self._before | storages_of(self.model), objects).values())
        self.probe_s += time.perf_counter() - start
        self.peak_held_bytes = max(self.peak_held_bytes, held)
        allowed = self._buffered_bytes + 2 * self._largest
        if held > allowed:
            self.overheld.append(f"after {name}: {held} bytes held, {allowed} allowed")

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        unfreeze = False
        if self.model is not None:
            start = time.perf_counter()
            holders = storage_holders()
            self._before = set(host_storages(objects=holders))
            self._old = [weakref.ref(o) for o in holders]
            del holders
            # Every object alive now moves to the collector's permanent
            # generation, which gc.get_objects() leaves out: each step then
            # walks only what the load made (a few thousand objects, not a
            # vLLM process's ~750,000). A freeze someone else made cannot be
            # undone in part, so it is then left in place, ours with it.
            unfreeze = gc.get_freeze_count() == 0
            gc.freeze()
            self.probe_s += time.perf_counter() - start
        name = ""
        try:
            for name, tensor in self.source():
                mine = tensor.clone() if self.copy else tensor
                del tensor  # hold no reference of this frame's own past the yield
                nbytes = mine.numel() * mine.element_size()
                self.refs.append((weakref.ref(mine), nbytes))
                self._largest = max(self._largest, nbytes)
                self._buffered_bytes += nbytes if name.startswith(self.buffered) else 0
                yield name, mine
                del mine
                self._count(name)  # the consumer has had its step: what did it keep?
            self._count(name)
        finally:
            if unfreeze:
                gc.unfreeze()

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
    """runai-model-streamer 0.17.x with owned=False in this process: views
    into its reused buffers, as 0.15.7 always gave. vLLM 0.21 calls
    stream_files without `owned`, so the streamer's default is changed;
    vLLM is untouched."""
    import functools

    from runai_model_streamer import SafetensorsStreamer

    SafetensorsStreamer.stream_files = functools.partialmethod(
        SafetensorsStreamer.stream_files, owned=False)
