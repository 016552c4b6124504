"""Facts about a model's parameter tensors that ZeRO's memory and communication depend on.

A :class:`ParamLayout` is built once per model; each query is cached per knob value, so the
search pays for a tensor walk only the first time it meets a data-parallel degree or a bucket
size. Tensor order is registration order (forward order); backward visits it reversed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate


def transformer_param_numels(num_layers: int, hidden_size: int, intermediate_size: int,
                             vocab_size: int, max_positions: int) -> tuple[int, ...]:
    """Parameter tensor sizes of a GPT-2-shaped decoder in registration order: token and
    position embeddings (the output head tied to the token embedding), then per layer
    LayerNorm, fused QKV, attention projection, LayerNorm, MLP in, MLP out (weights and biases),
    then the final LayerNorm."""
    h, f = hidden_size, intermediate_size
    layer = (h, h, h * 3 * h, 3 * h, h * h, h, h, h, h * f, f, f * h, h)
    return (vocab_size * h, max_positions * h) + layer * num_layers + (h, h)


class ParamLayout:
    """Cached per-tensor queries over one model's parameter tensor sizes."""

    __slots__ = ("numels", "total", "largest", "_sorted", "_sorted_prefix", "_cache", "_sub_groups", "_flags", "_nvme")

    def __init__(self, numels: tuple[int, ...]) -> None:
        self.numels = numels
        self.total = sum(numels)
        self.largest = max(numels)
        self._sorted = tuple(sorted(numels))
        self._sorted_prefix = (0,) + tuple(accumulate(self._sorted))
        self._cache: dict[tuple[object, ...], int] = {}
        self._sub_groups: dict[tuple[int, int, int], tuple[tuple[int, int], ...]] = {}
        self._flags: dict[tuple[object, ...], tuple[int, ...]] = {}
        self._nvme: dict[tuple[object, ...], tuple[tuple[int, int, bool], ...]] = {}

    def at_most(self, elements: int) -> tuple[int, int]:
        """(elements, tensors) of the tensors with at most ``elements`` elements."""
        k = bisect_right(self._sorted, elements)
        return self._sorted_prefix[k], k

    def persistent(self, threshold: int) -> tuple[int, int]:
        """(elements, tensors) of the tensors ZeRO-3 keeps whole on every rank: those with at
        most ``threshold`` elements (stage3_param_persistence_threshold; partition_parameters.py
        marks ``ds_persist`` with ``ds_numel <= threshold``)."""
        return self.at_most(threshold)

    def elements_at_least(self, elements: int) -> int:
        """Elements of the tensors that have at least ``elements`` elements."""
        return self.total - self._sorted_prefix[bisect_left(self._sorted, elements)]

    def max_partition_overlap(self, dp: int) -> int:
        """Largest, over ranks, element count of the tensors that touch a rank's slice of the
        ZeRO-1/2 flat buffer. DeepSpeed keeps whole gradients for these tensors
        (``params_in_partition`` in stage_1_and_2.py), so a tensor straddling a slice boundary
        counts on both sides. The flat buffer is padded to a multiple of 2 * dp elements."""
        key = ("overlap", dp)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        align = 2 * dp
        part = -(-self.total // align) * align // dp
        best = 0
        offset = 0
        spans = []
        for n in self.numels:
            if n:
                spans.append((offset, offset + n))
            offset += n
        first = 0
        for rank in range(dp):
            start, end = rank * part, (rank + 1) * part
            while first < len(spans) and spans[first][1] <= start:
                first += 1
            total = 0
            i = first
            while i < len(spans) and spans[i][0] < end:
                total += spans[i][1] - spans[i][0]
                i += 1
            best = max(best, total)
        self._cache[key] = best
        return best

    def partition_numel(self, dp: int) -> int:
        """Elements of one rank's ZeRO-3 parameter partition (:meth:`pieces`)."""
        key = ("partition", dp)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = sum(self.pieces(dp))
        return hit

    def pieces(self, dp: int, mp: int = 1) -> tuple[int, ...]:
        """Each tensor's piece of one rank's ZeRO-3 partition: every tensor is split on its own
        into dp pieces of ceil(n / dp) elements (``partition_numel`` in partition_parameters.py),
        each held in ceil(piece / mp) elements by each of ``mp`` model-parallel ranks."""
        key = ("pieces", dp, mp)
        hit = self._flags.get(key)
        if hit is None:
            whole = tuple(-(-n // dp) for n in self.numels)
            hit = self._flags[key] = whole if mp == 1 else tuple(-(-piece // mp) for piece in whole)
        return hit

    def largest_sub_group(self, sub_group_size: int, dp: int) -> int:
        """Elements of the largest ZeRO-3 optimizer sub-group on a rank (:meth:`sub_groups`); the
        whole partition when it is no larger than ``sub_group_size``."""
        return max(n for n, _ in self.sub_groups(sub_group_size, dp))

    def sub_groups(self, sub_group_size: int, dp: int, swap_block: int = 0) -> tuple[tuple[int, int], ...]:
        """Each ZeRO-3 optimizer sub-group of a rank (:meth:`sub_group_ends`), as (elements, elements
        of its tensors' partitions of at least ``swap_block`` elements: the fp32 gradients NVMe
        offload swaps, where smaller ones stay in memory)."""
        key = (sub_group_size, dp, swap_block)
        hit = self._sub_groups.get(key)
        if hit is not None:
            return hit
        groups: list[tuple[int, int]] = []
        start = 0
        for end in self.sub_group_ends(sub_group_size, dp):
            pieces = self.pieces(dp)[start:end]
            groups.append((sum(pieces), sum(p for p in pieces if p >= swap_block)))
            start = end
        self._sub_groups[key] = tuple(groups)
        return self._sub_groups[key]

    def sub_group_ends(self, sub_group_size: int, dp: int) -> tuple[int, ...]:
        """Where each ZeRO-3 optimizer sub-group of a rank ends (the index after its last tensor):
        the tensors' partitions (ceil(n / dp) each, in registration order) are grouped until a
        group reaches ``sub_group_size``, the last group closing at the last tensor (stage3.py
        ``_create_fp16_sub_groups``)."""
        key = ("ends", sub_group_size, dp)
        hit = self._flags.get(key)
        if hit is not None:
            return hit
        ends: list[int] = []
        filled = 0
        for i, piece in enumerate(self.pieces(dp)):
            filled += piece
            if filled >= sub_group_size:
                ends.append(i + 1)
                filled = 0
        if not ends or ends[-1] != len(self.numels):
            ends.append(len(self.numels))
        self._flags[key] = tuple(ends)
        return self._flags[key]

    def beyond_host_buffer(self, sub_group_size: int, dp: int, host_elements: int) -> tuple[int, ...]:
        """Per tensor, 1 where its partition is in a sub-group (:meth:`sub_group_ends`) that does
        not fit a rank's host buffer of ``host_elements`` (``offload_param.max_in_cpu``): stage3.py
        ``_create_fp16_partitions_with_defragmentation`` gives sub-groups host memory in order
        while the running total fits, so from the first that does not, every later one stays on
        NVMe. With the partition no larger than the buffer, none."""
        key = ("beyond", sub_group_size, dp, host_elements)
        hit = self._flags.get(key)
        if hit is not None:
            return hit
        flags: list[int] = []
        offset = start = 0
        if self.partition_numel(dp) <= host_elements:
            flags = [0] * len(self.numels)
        else:
            groups = self.sub_groups(sub_group_size, dp)
            for (elements, _), end in zip(groups, self.sub_group_ends(sub_group_size, dp)):
                offset += elements
                flags += [int(offset > host_elements)] * (end - start)
                start = end
        self._flags[key] = tuple(flags)
        return self._flags[key]

    def nvme_partitions(self, dp: int, mp: int, sub_group_size: int, host_elements: int, threshold: int,
                        reuse_distance: int, smallest: int) -> tuple[tuple[int, int, bool], ...]:
        """(tensor index, piece, kept after forward) of each tensor whose piece of a rank's
        partition, divided by the model-parallel degree ``mp``, ZeRO-Infinity keeps on NVMe: in a
        sub-group beyond the host buffer (:meth:`beyond_host_buffer`), more than ``threshold``
        elements whole (not persistent), and a piece of at least ``smallest`` elements
        (:meth:`kept_after_forward` says which stay gathered)."""
        key = ("nvme", dp, mp, sub_group_size, host_elements, threshold, reuse_distance, smallest)
        hit = self._nvme.get(key)
        if hit is not None:
            return hit
        beyond = self.beyond_host_buffer(sub_group_size, dp, host_elements)
        kept = self.kept_after_forward(threshold, reuse_distance)
        pieces = self.pieces(dp, mp)
        self._nvme[key] = tuple((i, piece, bool(kept[i])) for i, (n, piece) in enumerate(zip(self.numels, pieces))
                                if beyond[i] and n > threshold and piece >= smallest)
        return self._nvme[key]

    def bucket_count(self, bucket_elements: int) -> int:
        """Reductions issued while gradients fill buckets of ``bucket_elements`` in backward
        order: a bucket is reduced when the next gradient would overflow it; a gradient larger
        than the bucket is reduced on its own."""
        key = ("buckets", bucket_elements)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        count = 0
        filled = 0
        for n in reversed(self.numels):
            if not n:
                continue
            if filled and filled + n > bucket_elements:
                count += 1
                filled = 0
            filled += n
        count += 1 if filled else 0
        self._cache[key] = count
        return count

    def reuse_kept_numel(self, threshold: int, reuse_distance: int) -> int:
        """Elements of non-persistent tensors ZeRO-3 keeps gathered after their forward use
        (:meth:`kept_after_forward`)."""
        key = ("reuse", threshold, reuse_distance)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        kept = sum(n for n, k in zip(self.numels, self.kept_after_forward(threshold, reuse_distance)) if k)
        self._cache[key] = kept
        return kept

    def kept_after_forward(self, threshold: int, reuse_distance: int) -> tuple[int, ...]:
        """Per tensor, 1 where ZeRO-3 keeps it gathered after its forward use because the backward
        reuses it within ``reuse_distance`` elements of trace (stage3_max_reuse_distance), for a
        tensor of more than ``threshold`` elements (persistent ones are never released). From a
        tensor's forward use to its backward use the trace visits every later tensor twice (rest
        of forward, start of backward): kept where 2 * after < reuse_distance."""
        key = ("kept", threshold, reuse_distance)
        hit = self._flags.get(key)
        if hit is not None:
            return hit
        flags: list[int] = []
        after = 0
        for n in reversed(self.numels):
            flags.append(int(n > threshold and 2 * after < reuse_distance))
            after += n
        self._flags[key] = tuple(reversed(flags))
        return self._flags[key]
