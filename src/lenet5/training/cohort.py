"""A cohort: several runs trained in one process, in step, their updates computed as one
stacked model.

Each member is a whole solo run (its own LightningModule, DataModule, Trainer, callbacks,
checkpoints and records) running in its own thread. The threads take turns: one baton (a
lock) is held by whichever member runs, and process-wide state that a run owns (torch's
global random generator, which dropout, distortions and Lightning's seeding use; whatever
else the launcher names, such as Hydra's current job config) is swapped in and out with it.
So a member draws exactly what its solo run draws, whatever the others do.

At each chunk of training data (one Lightning step, several updates: `LeNet5Module.updates`)
a member hands its chunk to the cohort and waits; the member that completes the round
computes every member's updates together: the members' parameters held stacked for the
chunk (`_Held`: one tensor per parameter and group of alike optimizers, written back when the
chunk ends), and per update one `vmap(functional_call)` forward over each member's own batch,
the members' own losses (one vmap where their loss functions are alike), their sum
backpropagated once, and one optimizer step per group of alike optimizers over the stacked
tensors and the members' stacked states, which moves each member as its own step would. Where
the optimizers cannot step stacked tensors (a step hook), each update stacks the parameters
afresh (`torch.stack`, so each member's gradients flow back to its own tensors) and steps the
members' own optimizers (one step for those alike: `_step_together`). A member whose
network is not functional (dropout draws, batch norm's running statistics) or whose updates
need Lightning's hooks computes its own updates instead, as its solo run does.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, vmap

log = logging.getLogger("lenet5")
_seat = threading.local()
# LightningOptimizer's step counting around the plain optimizer's step (private API; see
# lenet5.training.module, which counts the same way): before, after.
STEP_COUNTERS = ("_on_before_step", "_on_after_step")
# Blocks whose forward draws random numbers or moves running statistics: under vmap they
# would draw or update once for all members, so a member with one computes its own updates.
NOT_FUNCTIONAL = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)
# stack="auto" stacks on a GPU, and on a CPU only below this many samples per update: there a
# stacked update gains where per-update overhead dominates (one digit per update), while at
# batch 64 it measured slower than the members one after another (benchmarks/results/cohort.md).
CPU_STACK_BELOW = 16


def current() -> Seat | None:
    """The cohort seat of the member this thread runs (None: a solo run)."""
    return getattr(_seat, "seat", None)


class Stopped(SystemExit):
    """The cohort was stopped from outside (Ctrl-C, SIGTERM in the launcher's thread).

    A SystemExit, as Lightning turns a Ctrl-C into: the member's run ends KILLED with its
    last checkpoint. (Lightning's own Ctrl-C handling sets a signal handler, which only the
    main thread may do.)"""


def functional(model: nn.Module) -> str | None:
    """Why `model`'s updates cannot be stacked by vmap (None: they can)."""
    for name, module in model.named_modules():
        if isinstance(module, NOT_FUNCTIONAL) and module.training:
            if isinstance(module, nn.modules.dropout._DropoutNd) and module.p == 0:
                continue
            return f"layer {name} ({type(module).__name__}) is not functional under vmap"
    return None


class Cohort:
    """The members' turns and their stacked updates.

    `stack`: True stacks every member that can be; False none (the members take turns, each
    computing its own updates); "auto" stacks on a GPU, and on a CPU only per-sample-like
    updates (fewer than CPU_STACK_BELOW samples).

    `contexts`: (save, restore) pairs for process-wide state a member owns besides torch's
    random generators: `save()` returns the state, `restore(state)` puts it back."""

    def __init__(
        self, size: int, contexts: list[tuple[Callable, Callable]] = (), stack: bool | str = True
    ):
        self.baton = threading.Condition(threading.Lock())
        self.contexts = [(torch.get_rng_state, torch.set_rng_state), *contexts]
        if torch.cuda.is_available():
            self.contexts.append((torch.cuda.get_rng_state_all, torch.cuda.set_rng_state_all))
        self.waiting: set[int] = set(range(size))  # members the next round waits for
        self.pending: dict[int, tuple] = {}  # member -> (module, x, y) of this round
        self.results: dict[int, tuple | None] = {}
        self.round = 0
        self.stack = stack
        self.stopped: str | None = None
        self.rounds_stacked = 0

    @contextmanager
    def seat(self, index: int) -> Iterator[Seat]:
        """Run member `index` in this thread (holding the baton except while it waits)."""
        seat = Seat(self, index)
        with self.baton:
            if self.stopped:  # stopped before its turn came: no run opened, none to continue
                self._leave(index)
                raise Stopped(self.stopped)
            seat.restore(first=True)
            _seat.seat = seat
            try:
                yield seat
            finally:
                _seat.seat = None
                self._leave(index)

    def interrupt(self, why: str) -> None:
        """Stop every member at its next chunk (called from the launcher's thread)."""
        self.stopped = why
        with self.baton:
            self.baton.notify_all()

    def _leave(self, index: int) -> None:
        """Member `index` takes no part in later rounds (its fit ended, or it stacks not)."""
        self.waiting.discard(index)
        if self.pending and set(self.pending) >= self.waiting:
            self._compute()

    def _compute(self) -> None:
        """The round's updates, every pending member's; then wake them."""
        pending, self.pending = self.pending, {}
        order = sorted(pending)
        try:
            if not self.stack:
                raise _Unstackable("stacking is off")
            results = stacked_updates([pending[i] for i in order])
            self.rounds_stacked += 1
            self.results.update(zip(order, results, strict=True))
        except _Unstackable as e:
            if self.stack:
                log.warning("cohort: stacking stopped, members compute their own updates: %s", e)
            self.stack = False
            self.results.update(dict.fromkeys(order))  # None: compute your own
        self.round += 1
        self.baton.notify_all()


class _Unstackable(Exception):
    pass


class Seat:
    """One member's place in a cohort: its turn, its saved process state, its chunks."""

    def __init__(self, cohort: Cohort, index: int):
        self.cohort, self.index = cohort, index
        self.state: list | None = None

    def save(self) -> None:
        self.state = [save() for save, _ in self.cohort.contexts]

    def restore(self, first: bool = False) -> None:
        if first:  # the state found at its first turn (its run then seeds its own generators)
            self.save()
        for (_, restore), value in zip(self.cohort.contexts, self.state, strict=True):
            restore(value)

    def updates(self, module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        """A chunk's updates of `module` (as `module.updates` makes them): (summed loss,
        samples), computed with the other members' where they stack."""
        cohort = self.cohort
        if cohort.stopped:
            raise Stopped(cohort.stopped)
        why = None if module.plain_updates else "its updates call Lightning's hooks"
        why = why or functional(module.model)
        cpu_batch = not x.is_cuda and module.update_size >= CPU_STACK_BELOW
        if why is None and cohort.stack == "auto" and cpu_batch:
            why = (
                f"on a CPU at {module.update_size} samples per update stacking gains nothing "
                "(hydra.launcher.stack=true forces it)"
            )
        if why is not None or not cohort.stack or self.index not in cohort.waiting:
            if why is not None and self.index in cohort.waiting:
                log.info("cohort member %d computes its own updates: %s", self.index, why)
            cohort._leave(self.index)
            return module.updates(x, y)
        cohort.pending[self.index] = (module, x, y)
        if set(cohort.pending) >= cohort.waiting:
            cohort._compute()
        else:
            round_ = cohort.round
            self.save()
            while cohort.round == round_ and not cohort.stopped:
                cohort.baton.wait()
            self.restore()
            if cohort.round == round_:  # stopped while waiting
                cohort.pending.pop(self.index, None)
                raise Stopped(cohort.stopped)
        result = cohort.results.pop(self.index)
        return module.updates(x, y) if result is None else result


def _stackable(group: list[tuple]) -> None:
    first = group[0][0].model
    names = [n for n, _ in first.named_parameters()]
    for module, _, _ in group[1:]:
        if [n for n, _ in module.model.named_parameters()] != names:
            raise _Unstackable("members' networks differ")


def stacked_updates(entries: list[tuple]) -> list[tuple[torch.Tensor, int]]:
    """Each entry's (module, x, y) chunk of updates, made together: per update, one vmap
    forward of the stacked parameters, one backward of the members' summed losses, each
    member's own optimizer step. Per entry: (summed loss, samples), as `module.updates`.

    While the same members take the chunk's updates their parameters stay stacked (`_Held`),
    written back when they leave it; where they cannot be held (`_Held.of`), each update
    stacks them afresh (`_update`)."""
    _stackable(entries)
    chunks = []
    for module, x, y in entries:
        size = module.update_size
        chunks.append(list(zip(x.split(size), y.split(size), strict=True)))
    # The members' summed losses, one tensor (an update adds to every member's at once).
    totals = entries[0][1].new_zeros(len(entries))
    seen = [0] * len(entries)
    at: dict[tuple, torch.Tensor] = {}  # members -> their places in `totals`
    held: dict[tuple, _Held | None] = {}  # members -> their parameters held stacked (None: not)
    alike: dict[tuple, list[list]] = {}  # members not held -> their optimizers alike
    one_loss = _losses_alike([module.loss for module, _, _ in entries])
    try:
        for b in range(max(len(c) for c in chunks)):
            group = []
            for k, (module, _, _) in enumerate(entries):
                max_steps = module.trainer.max_steps
                if b < len(chunks[k]) and not 0 <= max_steps <= module.global_step:
                    group.append(k)
            by_shape: dict[tuple, list[int]] = {}
            for k in group:  # one vmap per batch shape (a last short batch may differ)
                by_shape.setdefault(tuple(chunks[k][b][0].shape), []).append(k)
            for ks in by_shape.values():
                key = tuple(ks)
                modules = [entries[k][0] for k in ks]
                if key not in at:
                    at[key] = torch.tensor(ks, device=totals.device)
                for other in [o for o in held if o != key and set(o) & set(key)]:
                    if (gone := held.pop(other)) is not None:  # its members moved on
                        gone.release()
                if key not in held:  # a chunk's settings are fixed (schedulers step per pass)
                    held[key] = _Held.of(modules)
                    if held[key] is None and key not in alike:
                        alike[key] = _alike([m.optimizers().optimizer for m in modules])
                batches = [chunks[k][b] for k in ks]
                if (holding := held.get(key)) is not None:
                    losses = holding.update(batches, one_loss)
                else:
                    losses = _update(modules, batches, one_loss, alike[key])
                n = len(chunks[ks[0]][b][1])  # one shape: one batch size
                totals.index_add_(0, at[key], losses * n)  # as a solo run: total += loss * n
                for k in ks:
                    seen[k] += n
    finally:
        for holding in held.values():
            if holding is not None:
                holding.release()
    return list(zip(totals.unbind(), seen, strict=True))


class _Held:
    """The parameters of several members held stacked for a run of updates: one leaf tensor
    per parameter and group of alike optimizers (`_alike`), with those optimizers' states
    stacked the same way, so an update stacks nothing, and each group's step is one optimizer
    step over a few stacked tensors instead of one per member and parameter (per-sample
    updates on a CPU: ~1.4x the updates/s of stacking afresh at each update). `release`
    writes parameters, gradients and states back to the members. Every torch optimizer and
    SDLM move each element from its own gradient and state, so a member moves as its own step
    would move it (tests/test_cohort.py compare members with their solo runs)."""

    def __init__(self, modules: list, groups: list[list[int]], states: list[dict]) -> None:
        self.modules, self.groups = modules, groups
        self.order = [i for g in groups for i in g]  # members as the stacked tensors hold them
        tensors = [_tensors(m) for m in modules]
        device = next(iter(tensors[0][0].values())).device
        back = [self.order.index(i) for i in range(len(modules))]
        self.back = torch.tensor(back, device=device)  # stacked order -> the members' order
        self.params = [p for p, _ in tensors]
        names = list(self.params[0])
        self.leaves = [  # per group: name -> (members, *shape) leaf
            {
                n: torch.stack([self.params[i][n].detach() for i in g]).requires_grad_(
                    self.params[g[0]][n].requires_grad
                )
                for n in names
            }
            for g in groups
        ]
        self.buffers = {
            n: torch.stack([tensors[i][1][n] for i in self.order]) for n in tensors[0][1]
        }
        self.states = [  # per group: the stacked leaves' optimizer state
            defaultdict(dict, {self.leaves[gi][n]: state for n, state in states[gi].items()})
            for gi in range(len(groups))
        ]
        self.stepped = [[self.leaves[gi][n] for n in states[gi]] for gi in range(len(groups))]
        self.wrapped = [m.optimizers() for m in modules]  # Lightning's, which count the steps
        self.firsts = [self.wrapped[g[0]].optimizer for g in groups]  # one steps each group

    @classmethod
    def of(cls, modules: list) -> _Held | None:
        """Their parameters held, or None where the optimizers cannot step stacked tensors: a
        step hook, several parameter groups, or states that differ in more than their values
        (a 0-dimensional entry, such as Adam's step count, is one for the whole group)."""
        optimizers = [m.optimizers().optimizer for m in modules]
        for opt in optimizers:
            if opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks:
                return None
            if len(opt.param_groups) != 1:
                return None
        position = {id(opt): i for i, opt in enumerate(optimizers)}
        groups = [[position[id(opt)] for opt in same] for same in _alike(optimizers)]
        states = []
        for g in groups:
            state = _stacked_state([optimizers[i] for i in g], [_tensors(modules[i])[0] for i in g])
            if state is None:
                return None
            states.append(state)
        return cls(modules, groups, states)

    def _forward_params(self) -> dict:
        if len(self.leaves) == 1:
            return self.leaves[0]
        return {n: torch.cat([leaves[n] for leaves in self.leaves]) for n in self.leaves[0]}

    def update(self, batches: list[tuple], one_loss: bool) -> torch.Tensor:
        """One update of each member on its own batch (in the members' order); their losses."""
        batches = [batches[i] for i in self.order]
        members = [self.modules[i] for i in self.order]
        losses = _losses(members, self._forward_params(), self.buffers, batches, one_loss)
        for leaves in self.leaves:  # as each optimizer's zero_grad() (set_to_none)
            for leaf in leaves.values():
                leaf.grad = None
        losses.sum().backward()

        def step() -> None:
            for first, stepped, state in zip(self.firsts, self.stepped, self.states, strict=True):
                _step_as(first, stepped, state)

        _counted(self.wrapped, step)
        return losses.detach()[self.back]

    def release(self) -> None:
        """Parameters, gradients and optimizer states back to the members."""
        with torch.no_grad():
            for g, leaves, state in zip(self.groups, self.leaves, self.states, strict=True):
                for j, i in enumerate(g):
                    optimizer = self.wrapped[i].optimizer
                    for n, leaf in leaves.items():
                        p = self.params[i][n]
                        p.copy_(leaf[j])
                        p.grad = None if leaf.grad is None else leaf.grad[j].clone()
                        if leaf in state:
                            optimizer.state[p] = {
                                key: _member_value(v, leaf, j) for key, v in state[leaf].items()
                            }


def _stacked_state(optimizers: list, params: list[dict]) -> dict | None:
    """{parameter name: the members' optimizer state for it, stacked} for the parameters the
    optimizers step; None where the members' states cannot be stacked."""
    stepped = {id(p) for p in optimizers[0].param_groups[0]["params"]}
    names = [n for n, p in params[0].items() if id(p) in stepped]
    state = {}
    for n in names:
        own = []
        for opt, ps in zip(optimizers, params, strict=True):
            p = ps[n]
            if not any(p is q for q in opt.param_groups[0]["params"]):
                return None
            own.append(opt.state.get(p, {}))
        if any(set(s) != set(own[0]) for s in own):
            return None
        stacked = {}
        for key in own[0]:
            values = [s[key] for s in own]
            first = values[0]
            if isinstance(first, torch.Tensor) and first.dim() > 0:
                if any(v.shape != params[0][n].shape for v in values):
                    return None
                stacked[key] = torch.stack(values)
            elif isinstance(first, torch.Tensor):
                if any(not torch.equal(v, first) for v in values):
                    return None
                stacked[key] = first.clone()
            else:
                if any(v != first for v in values):
                    return None
                stacked[key] = first
        state[n] = stacked
    return state


def _member_value(value, leaf: torch.Tensor, j: int):
    """Member j's part of a held optimizer state's entry: its slice of a stacked tensor, or
    the entry shared by the group (a step count, a setting)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape == leaf.shape:
        return value[j].clone()
    return value.clone() if isinstance(value, torch.Tensor) else value


def _tensors(module) -> tuple[dict, dict]:
    """A network's parameters and buffers by name, looked up once: optimizers update them
    in place, so the same tensors serve every update."""
    found = getattr(module, "_cohort_tensors", None)
    if found is None:
        model = module.model
        found = (dict(model.named_parameters()), dict(model.named_buffers()))
        module._cohort_tensors = found
    return found


def _update(modules: list, batches: list[tuple], one_loss: bool, alike: list[list]) -> torch.Tensor:
    """One update of each module on its own batch; the members' losses (detached, stacked).
    `one_loss`: the members' losses are alike (`_losses_alike`), one vmap computes them;
    `alike`: their optimizers in groups that step as one (`_alike`)."""
    params, buffers = zip(*(_tensors(m) for m in modules), strict=True)
    stacked = {n: torch.stack([p[n] for p in params]) for n in params[0]}
    stacked_buffers = {n: torch.stack([b[n] for b in buffers]) for n in buffers[0]}
    losses = _losses(modules, stacked, stacked_buffers, batches, one_loss)
    for params_ in params:  # as each optimizer's zero_grad() (set_to_none), without its hooks
        for p in params_.values():
            p.grad = None
    losses.sum().backward()

    def step() -> None:
        for same in alike:
            _step_together(same)

    _counted([m.optimizers() for m in modules], step)
    return losses.detach()


def _losses(
    modules: list, params: dict, buffers: dict, batches: list[tuple], one_loss: bool
) -> torch.Tensor:
    """Each member's loss on its own batch (member k: row k of the stacked `params` and
    `buffers`, `batches[k]`): one vmap forward of the first member's network, then the
    losses, as one vmap where they are alike (`one_loss`)."""
    base = modules[0].model
    xs = torch.stack([x for x, _ in batches])

    def forward(p, b, x):
        # tie_weights=False: LeNet-5 shares no weights, and looking for ties walks every
        # module at each update (~10% of a per-sample update)
        return functional_call(base, (p, b), (x,), tie_weights=False)

    try:
        scores = vmap(forward)(params, buffers, xs)
    except Exception as e:  # a user's block vmap cannot batch: nothing was updated yet
        raise _Unstackable(f"vmap cannot run the network: {type(e).__name__}: {e}") from e
    ys = [y for _, y in batches]
    if one_loss:
        return vmap(modules[0].loss)(scores, torch.stack(ys))
    pairs = enumerate(zip(modules, ys, strict=True))
    return torch.stack([m.loss(scores[k], y) for k, (m, y) in pairs])


def _counted(wrapped: list, step: Callable[[], None]) -> None:
    """`step()`, inside each member's Lightning step counting (`STEP_COUNTERS`: its
    `global_step` counts the update as its solo run's does)."""
    for opt in wrapped:
        getattr(opt, STEP_COUNTERS[0])()
    step()
    for opt in wrapped:
        getattr(opt, STEP_COUNTERS[1])()


def _losses_alike(losses: list[nn.Module]) -> bool:
    """Whether the members' losses compute the same function (one class, the same settings,
    no tensors of their own), so that one vmap of the first computes each member's."""
    first = losses[0]

    def settings(loss: nn.Module) -> object:
        return type(loss), repr(sorted((k, v) for k, v in vars(loss).items() if k[0] != "_"))

    return all(
        not any(True for _ in loss.parameters()) and not any(True for _ in loss.buffers())
        for loss in losses
    ) and all(settings(loss) == settings(first) for loss in losses[1:])


def _alike(optimizers: list) -> list[list]:
    """The optimizers in groups that can step as one: the same class and settings (the
    seeds of one learning rate), one parameter group each, no step hooks of their own."""
    groups: dict = {}
    for k, opt in enumerate(optimizers):
        key: object = k  # alone
        hooks = opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
        if len(opt.param_groups) == 1 and not hooks:
            settings = {n: v for n, v in opt.param_groups[0].items() if n != "params"}
            key = (type(opt), repr(sorted(settings.items())))
        groups.setdefault(key, []).append(opt)
    return list(groups.values())


def _step_together(optimizers: list) -> None:
    """One step of several optimizers of the same class and settings, as one: their
    parameters as one group of the first, their states as one. Every torch optimizer and SDLM
    update each parameter from its own gradient and state, so each member moves as its own
    step would move it; a foreach (or fused) step then runs once for all members, not once
    each (on a GPU: one set of kernel launches)."""
    first = optimizers[0]
    if len(optimizers) == 1:
        first.step()
        return
    params = [p for opt in optimizers for p in opt.param_groups[0]["params"]]
    state = type(first.state)(dict)  # the members' state dicts themselves, updated in place
    for opt in optimizers:
        state.update(opt.state)
    _step_as(first, params, state)
    for opt in optimizers:  # state made by this step (a first step): to its own optimizer
        for p in opt.param_groups[0]["params"]:
            if p in state:
                opt.state[p] = state[p]


def _step_as(optimizer, params: list, state: dict) -> None:
    """One step of `optimizer` with its settings over `params` and `state` in place of its
    own (put back after): how one optimizer steps a group of alike members."""
    own_groups, own_state = optimizer.param_groups, optimizer.state
    optimizer.param_groups = [{**own_groups[0], "params": params}]
    optimizer.state = state
    try:
        optimizer.step()
    finally:
        optimizer.param_groups, optimizer.state = own_groups, own_state
