"""Tensor-parallel bookkeeping of InternLM2's fused ``wqkv`` (pure tensor functions, no vLLM).

The checkpoint's ``wqkv`` rows are grouped per KV head as ``[q_0 .. q_{g-1}, k, v]``. vLLM's
fused-QKV loader treats them as if they were ``[q; k; v]`` and gives rank ``r`` the r-th slice of
each of those three row ranges, so one rank's output is not one set of heads. The plugin gathers
the ranks' outputs, restores the checkpoint row order, splits q / k / v by the grouped layout,
and keeps this rank's heads.
"""

from __future__ import annotations

import torch


def restore_row_order(gathered: torch.Tensor, tp_size: int, q_part: int, kv_part: int) -> torch.Tensor:
    """``[t, tp * (q_part + 2 kv_part)]`` rank-concatenated outputs -> ``[t, all rows]`` in checkpoint order."""
    t = gathered.shape[0]
    per_rank = gathered.view(t, tp_size, q_part + 2 * kv_part)
    return torch.cat([per_rank[..., :q_part].reshape(t, -1),
                      per_rank[..., q_part:q_part + kv_part].reshape(t, -1),
                      per_rank[..., q_part + kv_part:].reshape(t, -1)], dim=-1)


def split_grouped(qkv: torch.Tensor, heads: int, kv_heads: int, head_dim: int, tp_size: int = 1, tp_rank: int = 0):
    """q, k, v of this rank from full ``wqkv`` outputs in checkpoint row order."""
    t = qkv.shape[0]
    g = heads // kv_heads
    grouped = qkv.view(t, kv_heads, g + 2, head_dim)
    q = grouped[:, :, :g].reshape(t, heads * head_dim)
    k = grouped[:, :, g].reshape(t, kv_heads * head_dim)
    v = grouped[:, :, g + 1].reshape(t, kv_heads * head_dim)
    if tp_size > 1:
        q, k, v = (x.chunk(tp_size, dim=-1)[tp_rank] for x in (q, k, v))
    return q.contiguous(), k.contiguous(), v.contiguous()
