"""Delayed linear coupling, as ``tvb.simulator.coupling.Linear`` with TVB's ``SparseHistory``.

For node k at integration step n (TVB, ``Coupling.__call__`` / ``SparseHistory.query_sparse``):

    gx_k(n) = sum_j W[k, j] * x_j(n - 1 - idelays[k, j])
    c_k(n)  = a * gx_k(n) + b

``W[k, j]`` is the weight from j into k (rows are targets), ``idelays`` the delays in integration
steps as TVB computed them for its dt and conduction speed, and x the coupling variable as stored
in the history. Zero-delay edges therefore see the state of the previous step (the current state).

Block evaluation. An edge with delay d reads, at step n + tau of a block starting at step n,
the state of step n + tau - 1 - d, which is already in the history for every tau <= d. So for a
block of K steps all edges with d >= K - 1 ("far" edges) are gathered at once from the history;
the only other edges allowed ("near" edges, d = 0 when K > 1) are added step by step from the
current state. K is chosen by the simulator as at most (smallest non-zero delay) + 1.

Row sums. In the default mode the per-edge products are summed per row with ``index_add``.
In the TVB-exact mode (float32 history and weights) the row sums reproduce, bit for bit, TVB's
``numpy.add.reduceat`` in float32 (see ``NumpyReduceatSum``): numpy adds the first element of a
segment to the *pairwise* sum of the rest (eight interleaved accumulators for up to 128 elements,
halving recursively beyond), and that order is emulated here with vectorised tensor operations.
"""
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from tvb.simulator import coupling as tvb_coupling


_PW_BLOCK = 128      # numpy's PW_BLOCKSIZE


class NumpyReduceatSum:
    """Row sums over edges, added in exactly the order of ``numpy.add.reduceat`` (float32 parity).

    For a row with items a_0..a_m numpy computes a_0 + pairwise(a_1..a_m), where pairwise(x) of
    n <= 128 items is: eight accumulators r_j = x_j + x_{8+j} + ... over the first n - n % 8 items,
    ((r_0+r_1)+(r_2+r_3)) + ((r_4+r_5)+(r_6+r_7)), then the remaining items added one by one
    (for n < 8: 0 + x_0 + x_1 + ...); beyond 128 items, pairwise(first n2) + pairwise(rest) with
    n2 = n/2 rounded down to a multiple of 8. Adding an exact zero changes no float, so ragged rows
    are padded with a zero sentinel and all rows are summed at once.
    """

    def __init__(self, rows: np.ndarray, n_rows: int, device: torch.device):
        E = rows.size
        zero = E                                  # index of the zero sentinel
        leaves, nodes, roots, heads = [], [], [], np.full(n_rows, zero)

        def build(items) -> int:                  # returns a node id (leaves first, then internal nodes)
            if len(items) <= _PW_BLOCK:
                leaves.append(items)
                return ("leaf", len(leaves) - 1)
            n2 = len(items) // 2
            n2 -= n2 % 8
            node = (build(items[:n2]), build(items[n2:]))
            nodes.append(node)
            return ("node", len(nodes) - 1)

        for k in range(n_rows):
            items = np.nonzero(rows == k)[0]
            if items.size:
                heads[k] = items[0]
            roots.append(build(items[1:]) if items.size > 1 else None)
        G = max([len(x) // 8 if len(x) >= 8 else 0 for x in leaves] + [1])
        acc = np.full((len(leaves), G, 8), zero)
        tail = np.full((len(leaves), 7), zero)
        for i, x in enumerate(leaves):
            n_acc = len(x) - len(x) % 8 if len(x) >= 8 else 0
            acc[i].reshape(-1)[:n_acc] = x[:n_acc]
            tail[i, :len(x) - n_acc] = x[n_acc:]
        # internal nodes by height, values indexed: [leaves..., zero, nodes...]
        n_leaf = len(leaves)
        slot = {}
        def index(ref):
            kind, i = ref
            return i if kind == "leaf" else slot[i]
        height = {}
        def h(ref):
            if ref[0] == "leaf":
                return 0
            if ref[1] not in height:
                l, r = nodes[ref[1]]
                height[ref[1]] = 1 + max(h(l), h(r))
            return height[ref[1]]
        levels = []
        next_slot = n_leaf + 1
        for lev in range(1, 1 + max([h(("node", i)) for i in range(len(nodes))] + [0])):
            ids = [i for i in range(len(nodes)) if h(("node", i)) == lev]
            left = [index(nodes[i][0]) for i in ids]
            right = [index(nodes[i][1]) for i in ids]
            for i in ids:
                slot[i] = next_slot
                next_slot += 1
            levels.append((torch.as_tensor(left, device=device), torch.as_tensor(right, device=device)))
        root_idx = [n_leaf if r is None else index(r) for r in roots]
        lt = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=device)
        self.acc, self.tail, self.heads, self.roots = lt(acc.reshape(-1)), lt(tail.reshape(-1)), lt(heads), lt(root_idx)
        self.levels, self.G, self.n_leaf = levels, G, n_leaf

    def __call__(self, prod: torch.Tensor) -> torch.Tensor:
        """prod (K, E, B) per-edge products -> (K, n_rows, B) row sums in numpy's order."""
        K, E, B = prod.shape
        p = torch.cat((prod, prod.new_zeros(K, 1, B)), dim=1)
        acc = p.index_select(1, self.acc).view(K, self.n_leaf, self.G, 8, B)
        r = acc[:, :, 0]
        for g in range(1, self.G):
            r = r + acc[:, :, g]
        res = ((r[:, :, 0] + r[:, :, 1]) + (r[:, :, 2] + r[:, :, 3])) + ((r[:, :, 4] + r[:, :, 5]) + (r[:, :, 6] + r[:, :, 7]))
        tail = p.index_select(1, self.tail).view(K, self.n_leaf, 7, B)
        for i in range(7):
            res = res + tail[:, :, i]
        vals = torch.cat((res, prod.new_zeros(K, 1, B)), dim=1)
        for left, right in self.levels:
            vals = torch.cat((vals, vals.index_select(1, left) + vals.index_select(1, right)), dim=1)
        return p.index_select(1, self.heads) + vals.index_select(1, self.roots)


def max_block(weights: np.ndarray, idelays: np.ndarray) -> int:
    """Longest block K for which every edge is far (d >= K-1) or has zero delay: shortest non-zero delay + 1."""
    delays = idelays[weights != 0]
    nonzero = delays[delays > 0]
    return int(nonzero.min()) + 1 if nonzero.size else 1 << 30


class DelayedLinearCoupling:
    """Sparse, delayed, weighted sum of the coupling variable over afferent edges.

    The history is kept time-major and flat: ``history[t * N * B + j * B + b]`` is the coupling
    variable of node j, batch member b, at the t-th of the last ``horizon`` steps (oldest first).
    ``numpy_order=True`` sums rows in numpy's float32 ``reduceat`` order (TVB-exact mode).
    """

    def __init__(self, weights: np.ndarray, idelays: np.ndarray, horizon: int, batch: int,
                 dtype: torch.dtype, device: torch.device, *, block: int = 1, numpy_order: bool = False):
        rows, cols = np.nonzero(weights)            # row-major, as TVB's argwhere
        self.n_nodes = weights.shape[0]
        self.batch = batch
        self.horizon = int(horizon)
        self.dtype, self.device = dtype, device
        self.rows, self.cols = rows, cols
        self.delays = idelays[rows, cols].astype(np.int64)
        self.weights = weights[rows, cols]
        self.numpy_order = numpy_order
        if block > max_block(weights, idelays):
            raise ValueError(f"block of {block} steps is longer than the shortest non-zero delay + 1")
        self.block = block
        # with blocks of more than one step, zero-delay edges are added step by step from the current state
        self.near = (self.delays == 0) if block > 1 else np.zeros(self.delays.shape, bool)
        self.has_near = bool(self.near.any())
        self._plans: Dict[int, Dict] = {}
        self._padded: Dict[object, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._plan(1)                               # the zero-delay plan, built outside any compiled region
        # zero-delay edges in padded form: (N, Dn) source nodes and (N, Dn, 1) weights (zero-padded), built
        # once here so that no per-step dtype conversion is needed (weights rounded to the history dtype,
        # as before, then held in the state dtype float64/float32 of the caller, see ``near_weights``)
        self.near_idx, self._near_w = self._padded_rows(self.rows[self.near], self.cols[self.near],
                                                         self.weights[self.near])
        # zero-delay edges that are all self-connections (TVB's usual case: the diagonal of the weights) need
        # no gather: each node's term is its own state times its weight (``near_idx`` None, ``_near_w`` (N, 1));
        # the steps of a block then couple no two nodes, so a compiled block runs them in one loop over nodes
        near_rows, near_cols = self.rows[self.near], self.cols[self.near]
        if self.has_near and np.array_equal(near_rows, near_cols):
            diag = np.zeros(self.n_nodes, self.weights.dtype)
            diag[near_rows] = self.weights[self.near]
            self.near_idx = None
            self._near_w = torch.tensor(diag, dtype=self.dtype, device=self.device).view(-1, 1, 1)
        self._near_w_cache: Dict[torch.dtype, torch.Tensor] = {}

    def _plan(self, K: int) -> Dict:
        """Index tensors for a block of K <= ``block`` steps (cached per K)."""
        if K in self._plans:
            return self._plans[K]
        N, B, L = self.n_nodes, self.batch, self.horizon
        far = ~self.near
        b = np.arange(B)
        tau = np.arange(K)
        t_src = (L - 1) + tau[:, None] - self.delays[far][None, :]          # (K, Ef) time index
        src = ((t_src * N + self.cols[far][None, :])[..., None] * B + b).reshape(-1)
        dst = (((tau[:, None] * N + self.rows[far][None, :])[..., None]) * B + b).reshape(-1)
        lt = lambda a: torch.as_tensor(a, dtype=torch.long, device=self.device)
        wt = lambda a: torch.tensor(a, dtype=self.dtype, device=self.device).view(1, -1, 1)
        reducer = NumpyReduceatSum(self.rows[far], N, self.device) if self.numpy_order else None
        plan = dict(src=lt(src), dst=lt(dst), w=wt(self.weights[far]), reducer=reducer)
        self._plans[K] = plan
        return plan

    def _padded_rows(self, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray):
        """Edges grouped by target row, padded to the largest in-degree D (>= 1) with zero weights:
        (N, D) source columns and (N, D, 1) weights in the history dtype."""
        N = self.n_nodes
        deg = np.bincount(rows, minlength=N)
        D = max(1, int(deg.max()) if deg.size else 1)
        order = np.argsort(rows, kind="stable")
        rows, cols, weights = rows[order], cols[order], weights[order]
        start = np.concatenate(([0], np.cumsum(deg)[:-1]))
        slot = np.arange(rows.size) - start[rows]
        idx = np.zeros((N, D), np.int64)
        w = np.zeros((N, D), weights.dtype if weights.size else np.float64)
        idx[rows, slot] = cols
        w[rows, slot] = weights
        return (torch.as_tensor(idx, device=self.device),
                torch.tensor(w, dtype=self.dtype, device=self.device).view(N, D, 1))

    def padded_plan(self, K: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Far edges of a block of K steps as a dense gather: ``rows`` (K, N, D) and ``w`` (N, D, 1).

        ``rows[tau, k, i]`` is the row ``t * N + j`` of the history viewed as (time * N, B) that the i-th
        far edge into k (source j, delay d) reads at step tau of the block (t = horizon - 1 + tau - d,
        time counted from the oldest step of the history window); padding entries have weight 0.
        """
        if K in self._padded:
            return self._padded[K]
        far = ~self.near
        N, L = self.n_nodes, self.horizon
        src_t, w = self._padded_rows(self.rows[far], (L - 1 - self.delays[far]) * N + self.cols[far],
                                     self.weights[far])
        D = src_t.shape[1]
        # padding entries (weight 0) read row tau * N, a valid row of the window
        tau = torch.arange(K, device=self.device).view(K, 1, 1) * N
        rows = (src_t.view(1, N, D) + tau).contiguous()
        self._padded[K] = (rows, w)
        return rows, w

    def node_major_plan(self, ring_length: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Far edges for ``gather_far_node_major`` on a node-major (N, R, B) history buffer of R = ``ring_length``
        steps: ``src`` (N, D) and ``w`` (N, D) (padded to the largest in-degree D with zero weights).

        ``src[k, i]`` is the flat position in the buffer of what the i-th far edge into k (source j, delay d)
        reads at the first step of a block whose history window starts at step 0 of the buffer, for batch
        member 0: (j * R + horizon - 1 - d) * B; a window starting at step o adds o * B.
        """
        key = ("node_major", ring_length)
        if key not in self._padded:
            far = ~self.near
            first = (self.cols[far] * ring_length + self.horizon - 1 - self.delays[far]) * self.batch
            src, w = self._padded_rows(self.rows[far], first, self.weights[far])
            self._padded[key] = (src, w.view(w.shape[0], w.shape[1]))
        return self._padded[key]

    def pull_plan(self, K: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The far edges transposed, for the backward: ``rows`` (K, N, Do) and ``w`` (N, Do, 1).

        The coupling variable of node j at step n is read by each far out-edge (target k, delay d, weight w)
        at step n + 1 + d, so the gradient reaching it through the coupling is the gather
        sum_i w_i * g_far[n + 1 + d_i, k_i] over j's out-edges (padded to the largest out-degree Do with
        zero weights): the forward's gather with the connectivity transposed and the delays pointing forward in
        time. ``rows[tau, j, i]`` is the row (tau + 1 + d_i) * N + k_i of a window of far-sum gradients
        viewed (time * N, B) whose row block 0 is the step of tau = 0; windows of K + horizon steps cover
        every read. Used with ``gather_far``.
        """
        key = ("pull", K)
        if key in self._padded:
            return self._padded[key]
        far = ~self.near
        N = self.n_nodes
        src, w = self._padded_rows(self.cols[far], (1 + self.delays[far]) * N + self.rows[far], self.weights[far])
        Do = src.shape[1]
        tau = torch.arange(K, device=self.device).view(K, 1, 1) * N
        rows = (src.view(1, N, Do) + tau).contiguous()
        self._padded[key] = (rows, w)
        return rows, w

    def near_weights(self, dtype: torch.dtype) -> torch.Tensor:
        """Zero-delay weights (rounded to the history dtype) in ``dtype``: (N, Dn, 1), or (N, 1) when Dn = 1."""
        if dtype not in self._near_w_cache:
            w = self._near_w.to(dtype)
            self._near_w_cache[dtype] = w.view(w.shape[0], 1) if w.shape[1] == 1 else w
        return self._near_w_cache[dtype]

    def far_sums(self, history: torch.Tensor, K: int) -> torch.Tensor:
        """gx from far edges for the K steps of a block: (K, N, B), in the history's dtype."""
        plan = self._plan(K)
        prod = history.index_select(0, plan["src"]).view(K, -1, self.batch) * plan["w"]
        if plan["reducer"] is not None:
            return plan["reducer"](prod)
        out = history.new_zeros(K * self.n_nodes * self.batch)
        return out.index_add(0, plan["dst"], prod.reshape(-1)).view(K, self.n_nodes, self.batch)



def gather_far(history: torch.Tensor, rows: torch.Tensor, w: torch.Tensor,
               offset: Optional[torch.Tensor] = None, unrolled: bool = False) -> torch.Tensor:
    """Far-edge sums of a block: ``history`` (T * N, B) time-major, ``rows``/``w`` from ``padded_plan``.

    ``offset`` (a 0-d integer tensor, or None for 0) is added to every row: the position of the window's
    oldest step in a longer buffer, so that a compiled caller sees the same shapes at every block.
    ``unrolled=True`` writes the sum over a node's edges as D separate terms added in edge order (for
    ``torch.compile``: one fused loop over (step, node, batch), vectorised along the contiguous batch
    axis, without a (K, N, D, B) intermediate); otherwise one gather and a ``sum`` (fewer eager ops).
    Returns (K, N, B).
    """
    K, N, D = rows.shape
    B = history.shape[-1]
    if offset is not None:
        rows = rows + offset
    if not unrolled:
        return (history.index_select(0, rows.view(-1)).view(K, N, D, B) * w).sum(2)
    out = history.index_select(0, rows[:, :, 0].reshape(-1)).view(K, N, B) * w[:, 0]
    for i in range(1, D):
        out = out + history.index_select(0, rows[:, :, i].reshape(-1)).view(K, N, B) * w[:, i]
    return out


def gather_far_node_major(buffer: torch.Tensor, offset: torch.Tensor, src: torch.Tensor, w: torch.Tensor, K: int,
                          B: int, unrolled: bool = False) -> torch.Tensor:
    """Far-edge sums of a block of K steps from a node-major history (``history.HistoryRing``): ``buffer`` the
    flat (N * R * B,) buffer, ``offset`` a 0-d integer tensor (the window's first step times B,
    ``HistoryRing.offset_tensor``), ``src``/``w`` from ``DelayedLinearCoupling.node_major_plan``. Returns (K, N, B).

    Each edge reads one contiguous run of K * B values (its source's K delayed steps for every batch member),
    taken from an overlapping strided view of the buffer (row p = values p .. p + K * B - 1): a gather of
    rows instead of K * B scattered values. ``unrolled=True`` adds the D edges of a node one by one, in edge
    order (for ``torch.compile``: one fused loop over (node, step, batch), vector loads along the run);
    otherwise one gather and a ``sum``.
    """
    runs = buffer.as_strided((buffer.numel() - K * B + 1, K * B), (1, 1))
    idx = src + offset
    N, D = idx.shape
    if unrolled:
        out = runs[idx[:, 0]] * w[:, 0:1]
        for i in range(1, D):
            out = out + runs[idx[:, i]] * w[:, i:i + 1]
    else:
        out = (runs[idx] * w.unsqueeze(-1)).sum(1)
    return out.view(N, K, B).transpose(0, 1)


def near_padded(current: torch.Tensor, idx: Optional[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """Zero-delay edge sums from the current coupling variable (N, B): ``idx`` (N, Dn), ``w`` from ``near_weights``;
    ``idx`` None: self-connections only, ``current * w`` with w (N, 1) the diagonal weights."""
    if idx is None:
        return current * w
    N, Dn = idx.shape
    if w.dim() == 2:                                 # one zero-delay edge per node at most (self-connections)
        return current.index_select(0, idx.view(-1)) * w
    return (current.index_select(0, idx.view(-1)).view(N, Dn, current.shape[-1]) * w).sum(1)


class Linear:
    """Port of ``tvb.simulator.coupling.Linear``: c_k = a * gx_k + b, gx the delayed weighted sum above.

    ``a`` is the global coupling strength (TVB's default 1/256), ``b`` an offset; both (1,) or (N,) in TVB,
    named ``"coupling.a"`` / ``"coupling.b"`` in ``TorchSimulator.params`` (``simulator.registry``).
    """

    tvb_class = tvb_coupling.Linear
    parameter_names = ("a", "b")

    @staticmethod
    def post(gx: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """TVB ``Linear.post``: c = a * gx + b (a, b of shape (N or 1, B or 1))."""
        return a * gx + b


#: supported TVB coupling classes -> their ports (as ``models.MODELS``)
COUPLINGS = {port.tvb_class: port for port in (Linear,)}
