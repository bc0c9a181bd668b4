"""AMC: a DDPG agent chooses each group's pruning ratio, layer by layer."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ._common import snap_down

STATE_FEATURES = ("index", "cin", "cout", "stride", "kernel", "cost", "reduced", "rest", "prev_action")


def amc_reward(accuracy: float, cost: float, target: float) -> float:
    """AMC's resource-constrained reward: the accuracy (= -error + 1; the constant cancels against the
    moving-average baseline) for episodes that meet the budget; -1 for any that does not (cannot
    happen with action clipping, kept as a guard)."""
    return float(accuracy) if cost <= target * (1 + 1e-9) else -1.0


def clip_width(ctx, decided: dict[str, int], group, rest: list, proposed: int) -> int:
    """AMC's action clipping: the widest grid width not above ``proposed`` such that, with every
    later group at its minimum width (maximum pruning), the budget can still be met."""
    floor = {g.name: ctx.grid(g)[0] for g in rest}
    for w in reversed([w for w in ctx.grid(group) if w <= proposed]):
        if ctx.meets({**decided, group.name: w, **floor}):  # every budget, with several (issue #20)
            return w
    return ctx.grid(group)[0]


def truncated_normal(rng: np.random.Generator, mu: float, sigma: float, lo: float, hi: float) -> float:
    """Sample N(mu, sigma) truncated to [lo, hi] (rejection; AMC's exploration noise)."""
    if sigma <= 0:
        return float(np.clip(mu, lo, hi))
    for _ in range(100):
        v = rng.normal(mu, sigma)
        if lo <= v <= hi:
            return float(v)
    return float(np.clip(mu, lo, hi))


def _mlp(inp: int, hidden: int, out: int, sigmoid: bool) -> nn.Module:
    layers = [nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out)]
    return nn.Sequential(*layers, *( [nn.Sigmoid()] if sigmoid else []))


class DDPG:
    """Actor-critic with target networks (soft updates, ``tau``) and a replay buffer (Lillicrap et
    al. 2016), sized as in AMC's implementation but smaller hidden layers (the state is 9-D)."""

    def __init__(self, state_dim: int, hidden: int = 64, lr_actor: float = 1e-3, lr_critic: float = 2e-3,
                 tau: float = 0.01, discount: float = 1.0, buffer: int = 2000, batch: int = 64, seed: int = 0):
        torch.manual_seed(seed)
        self.actor = _mlp(state_dim, hidden, 1, sigmoid=True)
        self.critic = _mlp(state_dim + 1, hidden, 1, sigmoid=False)
        self.actor_t, self.critic_t = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        self.opt_a = torch.optim.Adam(self.actor.parameters(), lr=lr_actor)
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=lr_critic)
        self.tau, self.discount, self.batch, self.cap = tau, discount, batch, buffer
        self.memory: list[tuple] = []
        self.rng = np.random.default_rng(seed)

    def act(self, state: np.ndarray) -> float:
        with torch.no_grad():
            return float(self.actor(torch.as_tensor(state, dtype=torch.float32)[None])[0, 0])

    def remember(self, s, a, r, s2, done) -> None:
        self.memory.append((s, a, r, s2, done))
        if len(self.memory) > self.cap:
            self.memory.pop(0)

    def update(self) -> None:
        if len(self.memory) < 2:
            return
        idx = self.rng.choice(len(self.memory), size=min(self.batch, len(self.memory)), replace=False)
        s, a, r, s2, d = (torch.as_tensor(np.array(v), dtype=torch.float32) for v in zip(*[self.memory[i] for i in idx]))
        a, r, d = a[:, None], r[:, None], d[:, None]
        with torch.no_grad():
            q_next = self.critic_t(torch.cat([s2, self.actor_t(s2)], 1))
            y = r + self.discount * (1 - d) * q_next
        loss_c = ((self.critic(torch.cat([s, a], 1)) - y) ** 2).mean()
        self.opt_c.zero_grad()
        loss_c.backward()
        self.opt_c.step()
        loss_a = -self.critic(torch.cat([s, self.actor(s)], 1)).mean()
        self.opt_a.zero_grad()
        loss_a.backward()
        self.opt_a.step()
        for net, tgt in ((self.actor, self.actor_t), (self.critic, self.critic_t)):
            for p, pt in zip(net.parameters(), tgt.parameters()):
                pt.data.mul_(1 - self.tau).add_(self.tau * p.data)


def static_features(ctx) -> np.ndarray:
    """Per group (in graph order): index, cin, cout, stride, kernel of its root layer, and its
    cost (cost saved by cutting the group to its minimum, from the cost model: ms on the table)."""
    rows = []
    base = ctx.baseline_cost
    for i, g in enumerate(ctx.graph.prunable):
        mod = ctx.graph.module(g.name)
        cin = getattr(mod, "in_channels", getattr(mod, "in_features", g.width))
        cout = getattr(mod, "out_channels", getattr(mod, "out_features", g.width))
        stride = (getattr(mod, "stride", (1,)) or (1,))[0]
        kernel = (getattr(mod, "kernel_size", (1,)) or (1,))[0]
        cost = base - ctx.predict({g.name: ctx.grid(g)[0]})
        rows.append([i, cin, cout, stride, kernel, cost])
    return np.array(rows, dtype=np.float64)


def normalise(x: np.ndarray) -> np.ndarray:
    """Min-max per feature to [0, 1] (AMC normalises the embedding the same way)."""
    lo, hi = x.min(0), x.max(0)
    return (x - lo) / np.where(hi - lo > 0, hi - lo, 1.0)


def amc(ctx) -> dict[str, int]:
    """He et al., 'AMC: AutoML for Model Compression and Acceleration on Mobile Devices' (ECCV 2018).

    A DDPG agent walks the channel groups in order; the state embedding per group is
    (index, cin, cout, stride, kernel, cost of the layer, cost reduced so far, cost of the rest,
    previous action), normalised, with cost read from the latency table instead of FLOPs. The action
    is the group's pruning ratio in [0, ``amc_max_prune``]; it is clipped so that, with every later
    group at maximum pruning, the budget stays reachable (so every episode meets it). Reward: the
    evaluator's accuracy at the end of the episode, shared by all its transitions with a moving-
    average baseline subtracted, discount 1 (as AMC's code). ``amc_warmup`` random episodes fill the
    replay buffer, then exploration noise (truncated normal, sigma ``amc_sigma`` decaying by
    ``amc_decay`` per episode) around the actor. Episodes: ``amc_episodes`` (default 40). With several
    budgets (devices) the clipping keeps all of them reachable and the reward asks that all are met.
    """
    ctx.need_budget("amc")
    opts = ctx.options
    episodes = opts.amc_episodes
    warmup = min(max(1, episodes // 4) if opts.amc_warmup is None else opts.amc_warmup, episodes)
    sigma, decay, max_prune = opts.amc_sigma, opts.amc_decay, opts.amc_max_prune
    groups = ctx.graph.prunable
    rng = np.random.default_rng(ctx.config.seed)
    static = static_features(ctx)
    base = ctx.baseline_cost
    agent = DDPG(len(STATE_FEATURES), seed=ctx.config.seed)
    best = (None, -np.inf)
    moving = None
    log = []
    bar = ctx.bar(episodes, "amc")
    for ep in range(episodes):
        decided: dict[str, int] = {}
        prev, traj = 0.0, []
        for t, g in enumerate(groups):
            rest = groups[t + 1:]
            cur_cost = ctx.predict(decided)
            dyn = np.array([(base - cur_cost) / base, static[t + 1:, 5].sum() / base if rest else 0.0, prev])
            s = np.concatenate([normalise(static)[t], dyn]).astype(np.float32)
            if ep < warmup:
                a = float(rng.uniform(0, max_prune))
            else:
                a = truncated_normal(rng, agent.act(s) * max_prune, sigma * max_prune, 0.0, max_prune)
            w = snap_down(ctx.grid(g), g.width * (1 - a))
            w = clip_width(ctx, decided, g, rest, w)
            decided[g.name] = w
            a_eff = 1 - w / g.width
            traj.append([s, a_eff / max_prune])
            prev = a_eff
        acc = ctx.evaluate(decided)
        r = amc_reward(acc, max(ctx.pressure(decided)), 1.0)  # predicted/budget of the tightest budget
        moving = r if moving is None else 0.95 * moving + 0.05 * r
        for i, (s, a) in enumerate(traj):
            s2 = traj[i + 1][0] if i + 1 < len(traj) else s
            agent.remember(s, min(a, 1.0), r - moving, s2, float(i + 1 == len(traj)))
        if ep >= warmup:
            sigma *= decay
            for _ in range(len(groups)):
                agent.update()
        if r > best[1]:
            best = (dict(decided), r)
        log.append({"episode": ep, "reward": r, "accuracy": acc, "predicted": ctx.predict(decided)})
        bar.update(1)
        bar.set_postfix_str(f"ep {ep}: acc {acc:.4f} best {best[1]:.4f} pred {ctx.predict(best[0]):.4g}/"
                            f"{ctx.target:.4g} {ctx.cost.unit}")
    bar.close()
    ctx.artifacts["amc_episodes"] = log
    return best[0]
