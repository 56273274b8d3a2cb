"""The ring kernel's attention for one new token per stream, compiled with Numba.

Each query attends to one key/value row of the ring (`window` slots of one stream and
key/value head). With torch.bmm that is thousands of 1 x head_dim x window products per layer,
and the batched matmul pays a fixed cost per matrix: on benchmarks/compress.py's files the two
bmms read the ring at about 12 GB/s a thread, half of every step. These loops read it once,
in order, at about 20 GB/s a thread (bfloat16, 596 rows of 128 x 48; this module's test
prints nothing, `benchmarks/roofline.py` times the step). They also write the new token's key
and value into its slot as they pass, instead of a separate strided copy.

The keys are stored transposed, (rows, head_dim, window), so the score loop runs over
contiguous slots; the values as (rows, window, head_dim). Storage is bfloat16 or float32 bits
(uint16 or uint32 arrays; `shift` 16 or 0 widens them to float32). Every sum runs in one fixed
order and nothing is reassociated or fused (no fastmath): the results depend on the inputs
alone, not on the SIMD width or thread count, so encoder and decoder agree wherever both run
this code.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, boundscheck=False)
def scores(q, keys, new_keys, slot, n, shift, out):  # pragma: no cover - compiled (tests call it)
    """out[r, :n] = q[r] . the first n keys of key row r // group, where group = rows of q per key row.
    First writes new_keys[row] into slot `slot` of each key row. q (rows, hd) float32; keys (kv_rows, hd, window)
    and new_keys (kv_rows, hd) as bits; out (rows, >= n) float32."""
    rows, hd = q.shape
    group = rows // keys.shape[0]
    bits = np.empty(keys.shape[2], np.uint32)
    key = bits.view(np.float32)
    acc = np.empty(keys.shape[2], np.float32)
    for r in range(rows):
        kv = r // group
        if r % group == 0:
            for d in range(hd):
                keys[kv, d, slot] = new_keys[kv, d]
        acc[:n] = 0.0
        for d in range(hd):
            qd = q[r, d]
            for j in range(n):
                bits[j] = np.uint32(keys[kv, d, j]) << shift
            for j in range(n):
                acc[j] += qd * key[j]
        out[r, :n] = acc[:n]


@njit(cache=True, nogil=True, boundscheck=False)
def mix(probs, values, new_values, slot, n, shift, out):  # pragma: no cover - compiled (tests call it)
    """out[r] = sum over j < n of probs[r, j] * value j of value row r // group, summed in order of j.
    First writes new_values[row] into slot `slot` of each value row. probs (rows, >= n) float32; values
    (kv_rows, window, hd) and new_values (kv_rows, hd) as bits; out (rows, hd) float32."""
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
            p = probs[r, j]
            for d in range(hd):
                bits[d] = np.uint32(values[kv, j, d]) << shift
            for d in range(hd):
                acc[d] += p * value[d]
        out[r, :] = acc
