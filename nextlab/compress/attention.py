"""The ring kernel's attention for one new token per stream, compiled with Numba.

Each query attends to one key/value row of the ring (`window` slots of one stream and key/value
head). With torch.bmm that is thousands of 1 x head_dim x window products per layer, and the
batched matmul pays a fixed cost per matrix: it read the ring at about 12 GB/s a thread, and took
half of every step. These loops read each row once, in order, and write the new token's key and
value into its slot as they pass, instead of a separate strided copy. Side by side in the coder
(benchmarks/compress.py --bmm: two one-thread workers, bf16), static mode coded
benchmarks/compress.py's five files 1.07-1.61x faster with them than with torch.bmm.

The keys are stored transposed, (rows, head_dim, window), so the score loop runs over
contiguous slots; the values as (rows, window, head_dim). Storage is bfloat16 or float32 bits
(uint16 or uint32 arrays, which `widen` turns into float32 bits). Every sum runs in one fixed
order and nothing is reassociated or fused (no fastmath): the results depend on the inputs
alone, not on the SIMD width, so encoder and decoder agree wherever both run this code. The
loops are single-threaded: the coder uses them where each worker has one thread (coder.py's
resolve_attention).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload


def widen(bits):
    """The float32 bits of a stored value (used inside the compiled loops only)."""
    raise NotImplementedError("compiled only")


@overload(widen, inline="always")
def _widen(bits):  # pragma: no cover - compiled
    if bits == types.uint16:  # bf16 bits are the high half of fp32's
        return lambda bits: np.uint32(bits) << np.uint32(16)
    return lambda bits: np.uint32(bits)  # fp32 bits as they are


@njit(inline="always", nogil=True, boundscheck=False)
def _add_scaled(acc, weight, stored, count, bits, widened):  # pragma: no cover - compiled
    """acc[:count] += weight * stored[:count], the stored bits widened into the scratch `bits` first (of which
    `widened` is the float32 view): two plain loops, which LLVM vectorizes, each element's sum in the callers' order."""
    for i in range(count):
        bits[i] = widen(stored[i])
    for i in range(count):
        acc[i] += weight * widened[i]


@njit(cache=True, nogil=True, boundscheck=False)
def scores(q, keys, new_keys, slot, n, out):  # pragma: no cover - compiled (tests call it)
    """out[r, :n] = q[r] . the first n keys of key row r // group (group = rows of q per key row), where slot
    `slot` holds new_keys[row], which is then written there. q (rows, hd) float32; keys (kv_rows, hd, window)
    and new_keys (kv_rows, hd) as bits (uint16: bf16, uint32: fp32); out (rows, >= n) float32."""
    rows, hd = q.shape
    group = rows // keys.shape[0]
    bits = np.empty(keys.shape[2], np.uint32)
    key = bits.view(np.float32)
    new_bits = np.empty(hd, np.uint32)
    new_key = new_bits.view(np.float32)
    acc = np.empty(keys.shape[2], np.float32)
    for r in range(rows):
        kv = r // group
        for d in range(hd):
            new_bits[d] = widen(new_keys[kv, d])
        acc[:n] = 0.0
        fresh = np.float32(0.0)  # the new key's score, summed in the same order as the others
        for d in range(hd):
            _add_scaled(acc, q[r, d], keys[kv, d], n, bits, key)
            fresh += q[r, d] * new_key[d]
        acc[slot] = fresh
        out[r, :n] = acc[:n]
        if r % group == group - 1:  # written after the row's last read: a store into a line just
            for d in range(hd):  # loaded for the vector loop stalls it (measured 0.81 against 0.49 ms a layer)
                keys[kv, d, slot] = new_keys[kv, d]


@njit(cache=True, nogil=True, boundscheck=False)
def mix(probs, values, new_values, slot, n, out):  # pragma: no cover - compiled (tests call it)
    """out[r] = sum over j < n of probs[r, j] * value j of value row r // group, summed in order of j, after
    writing new_values[row] into slot `slot`. probs (rows, >= n) float32; values (kv_rows, window, hd) and
    new_values (kv_rows, hd) as bits; out (rows, hd) float32."""
    rows = probs.shape[0]
    group = rows // values.shape[0]
    hd = values.shape[2]
    bits = np.empty(hd, np.uint32)
    value = bits.view(np.float32)
    acc = np.empty(hd, np.float32)
    for r in range(rows):
        kv = r // group
        if r % group == 0:
            values[kv, slot, :] = new_values[kv, :]
        acc[:] = 0.0
        for j in range(n):
            _add_scaled(acc, probs[r, j], values[kv, j], hd, bits, value)
        out[r, :] = acc


def load(storage: type) -> None:
    """Compile both loops for this storage (np.uint16: bf16 bits, np.uint32: fp32 bits), or load them from Numba's
    cache, in this process, so that workers forked from it inherit them rather than each compiling them (about
    5 s, the first time after an install or a change to this file) or loading them (about 0.35 s, most of it
    starting LLVM)."""
    q, out = np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32)
    rows, new = np.zeros((1, 1, 1), storage), np.zeros((1, 1), storage)
    scores(q, rows, new, 0, 1, out)
    mix(out, rows, new, 0, 1, q)
