"""Gather a batch of letterboxed items (shm slab slots or inline arrays) into one input.

On the CPU: one host memcpy per item into a reused contiguous (max_batch, 3, H, W) uint8 array,
under the slab's seqlock (an item overwritten before or during the copy is reported, not used).

With CUDA and the torch backend: every preprocess slab is registered once as page-locked memory
(``cudaHostRegister`` through ``torch.cuda.cudart()``), so each item is copied straight from its
slot to its row of a device batch by an async DMA on this stage's own CUDA stream; no host
memcpy, no pinned staging buffer. The seqlock check happens after the stream synchronised (the
DMA may have raced an overwrite), and rows that failed it are removed before inference. Inline
items (offline frames, tcp edges) are copied from pageable memory on the same stream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.messages import ItemMsg, ShmRef
from pipeline.shm import ShmReader, ShmRing

log = logging.getLogger("edgestream.detect.gather")


@dataclass
class Gathered:
    """``batch``: (n, 3, H, W) uint8 numpy array or CUDA tensor holding ``items`` in order;
    ``lost``: items whose slot was overwritten (not in ``batch``)."""

    batch: Any
    items: list[ItemMsg]
    lost: list[ItemMsg]


class HostGatherer:
    """Copy items into a reused contiguous host array."""

    def __init__(self, max_batch: int, input_hw: tuple[int, int]) -> None:
        self._host = np.empty((max_batch, 3, *input_hw), np.uint8)
        self._reader = ShmReader()

    def gather(self, items: Sequence[ItemMsg]) -> Gathered:
        kept: list[ItemMsg] = []
        lost: list[ItemMsg] = []
        for item in items:
            row = self._host[len(kept)]
            if isinstance(item.pixels, ShmRef):
                ok = self._reader.read(item.pixels, out=row) is not None
            else:
                np.copyto(row, item.pixels)
                ok = True
            (kept if ok else lost).append(item)
        return Gathered(self._host[: len(kept)], kept, lost)

    def close(self) -> None:
        self._reader.close()


class CudaGatherer:
    """Async H2D copies from pinned (registered) slabs on a private stream."""

    def __init__(self, max_batch: int, input_hw: tuple[int, int], device: Any) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self._dev = torch.empty((max_batch, 3, *input_hw), dtype=torch.uint8, device=self.device)
        self._rings: dict[str, tuple[ShmRing, Any]] = {}  # name -> (ring, tensor over it)
        self._registered: set[str] = set()  # the rings whose pages CUDA pinned
        self.registered_bytes = 0

    def _pinned(self, name: str) -> tuple[ShmRing, Any] | None:
        entry = self._rings.get(name)
        if entry is not None:
            return entry
        try:
            ring = ShmRing.attach(name, writable=True)  # cudaHostRegister wants a writable map
        except Exception as e:
            log.debug("cannot attach %s: %s", name, e)
            return None
        tensor = self.torch.from_numpy(ring.data)  # (slots, slot_bytes) uint8 over the mmap
        cudart = self.torch.cuda.cudart()
        err = cudart.cudaHostRegister(tensor.data_ptr(), ring.data.nbytes, 0)
        if int(err) != 0:  # pageable fallback still works, just without DMA straight from shm
            self._clear_last_error()
            log.warning(
                "cannot pin shared memory %s for direct GPU copies (cudaHostRegister: error %d, "
                "%s); copying from pageable memory instead. Linux pins only tmpfs/shmem pages "
                "for long: keep EDGESTREAM_SHM_DIR on a tmpfs such as /dev/shm.",
                ring.path,
                int(err),
                cudart.cudaGetErrorString(err),
            )
        else:
            self._registered.add(name)
            self.registered_bytes += ring.data.nbytes
            log.info("pinned %s (%.0f MiB) for direct GPU copies", name, ring.data.nbytes / 2**20)
        entry = self._rings[name] = (ring, tensor)
        return entry

    def _clear_last_error(self) -> None:
        """A failed CUDA runtime call stays the thread's "last error" until someone reads it,
        and PyTorch's next kernel-launch check would report it as its own failure. torch does
        not bind cudaGetLastError, so let one launch check read (and so reset) it; a second
        launch must then succeed, or the context is really broken and that is raised."""
        try:
            self.torch.zeros(1, device=self.device).add_(1)
        except Exception as e:  # torch.AcceleratorError (a RuntimeError in older torch)
            log.debug("cleared the failed registration's CUDA error: %s", e)
        self.torch.zeros(1, device=self.device).add_(1)
        self.torch.cuda.synchronize(self.device)

    def gather(self, items: Sequence[ItemMsg]) -> Gathered:
        torch = self.torch
        refs: list[tuple[int, ShmRing | None, ShmRef | None]] = []
        lost: list[ItemMsg] = []
        placed: list[ItemMsg] = []
        with torch.cuda.stream(self.stream):
            for item in items:
                row = self._dev[len(placed)]
                if isinstance(item.pixels, ShmRef):
                    ref = item.pixels
                    entry = self._pinned(ref.ring)
                    if entry is None or not entry[0].valid(ref):
                        lost.append(item)
                        continue
                    ring, tensor = entry
                    src = tensor[ref.slot, : ref.nbytes].view(ref.shape)
                    row.copy_(src, non_blocking=True)
                    refs.append((len(placed), ring, ref))
                else:
                    row.copy_(torch.from_numpy(np.ascontiguousarray(item.pixels)))
                    refs.append((len(placed), None, None))
                placed.append(item)
        self.stream.synchronize()
        keep = [i for i, ring, ref in refs if ring is None or ref is None or ring.valid(ref)]
        if len(keep) == len(placed):
            return Gathered(self._dev[: len(placed)], placed, lost)
        lost += [placed[i] for i in range(len(placed)) if i not in keep]
        index = torch.tensor(keep, device=self.device, dtype=torch.long)
        return Gathered(self._dev.index_select(0, index), [placed[i] for i in keep], lost)

    def close(self) -> None:
        cudart = self.torch.cuda.cudart()
        for name, (ring, tensor) in self._rings.items():
            # unregistering a ring that was never pinned would leave an error behind (above)
            if name in self._registered and int(cudart.cudaHostUnregister(tensor.data_ptr())):
                self._clear_last_error()
            del tensor
            ring.close()
        self._rings.clear()
        self._registered.clear()
        self.registered_bytes = 0
