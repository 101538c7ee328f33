"""Activation states of switching surfaces and the base class of the switching systems."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..stiff import inverse_map_slope as inverse_map_slope  # (re-exported: the switching systems' dθ/dz)

INACTIVE, ACTIVE, SLIDING = 0, 1, 2

_ZERO_FACTOR = 10.0  # |h| ≤ this × (error scale of h) counts as "at zero"
_ALPHA_EPS = 1e-7  # α within this of a bound is at the bound


class FilippovInvariantError(RuntimeError):
    """A switching surface ended a segment on the side opposite to its activation state (a missed event)."""


def _transitions(old: Tensor, new: Tensor) -> dict:
    flipped = ((old == ACTIVE) & (new == INACTIVE)) | ((old == INACTIVE) & (new == ACTIVE))
    return {
        "crossings": int(flipped.sum()),
        "entries": int(((old != SLIDING) & (new == SLIDING)).sum()),
        "exits": int(((old == SLIDING) & (new != SLIDING)).sum()),
    }


class AbstractSwitchingSystem(abc.ABC):
    """A switching system for the :class:`~flowsim.solvers.filippov.FilippovDriver` event core.

    It holds the activation state — a mode per surface (active / inactive / sliding), the sliding α's at a
    segment start, and the pattern P, sliding mask, sides σ derived from them — and gives the field of that
    fixed state, the surfaces h and their rates ḣ, and the classification of surfaces at zero at a segment
    start. Surfaces are indexed like the state, shape `S` (e.g. `(n, m)`); "flat index" means into h.flatten().

    Optional capabilities (defaults here):
        supports_soft: transversal crossings may be switched inside a kept step (the system then provides
            ``m``, ``split``, ``balance``, ``restore_balance``, ``balance_ref``, ``crossing_rates`` and
            ``crossing_correction``, as :class:`~flowsim.solvers.filippov.two_layer._TwoLayerSwitching`).
        inert: surfaces that are not independent switching surfaces (bool, shape `S`; not watched for events,
            exempt from the side check), or None.
        :meth:`project_sliding`: put drifted sliding surfaces back onto h = 0 (default: never).
        :class:`DenseSurfaceRates`: ḣ along a step's dense output, for Newton root finding.
        scans_subsets: h and ḣ of chosen surfaces at several states (:meth:`surfaces_and_rates_at`), so the event
            scan samples only the surfaces that can reach zero inside a step.
    """

    supports_soft: bool = False
    scans_subsets: bool = False
    inert: Tensor | None = None

    def _init_state(self, shape: tuple, dtype, device) -> None:
        self.dtype = dtype
        self.mode = torch.zeros(shape, dtype=torch.long, device=device)
        self.alpha0 = torch.zeros(shape, dtype=dtype, device=device)
        self.lam = 0.0  # Baumgarte rate of the current segment
        # per sliding block, the factor on the Baumgarte term λ h_S, fixed at a segment's first evaluation so that
        # it moves α at most half way to [0, 1]'s bounds there (None: not yet fixed for this segment)
        self.bg_scale: dict | None = None
        self.bg_single: Tensor | None = None  # the same factors for the batched one-surface neurons
        # per sliding block, its coinciding sets (lcp._coinciding_groups, None: none), found at a segment's first
        # evaluation
        self.coinciding: dict = {}
        self._refresh()

    @staticmethod
    def _assign(new: Tensor, alpha0: Tensor, idx: tuple, al: Tensor, att: Tensor | None = None) -> None:
        """Modes of the classified surfaces ``idx`` from their Filippov α `(K,)`: α strictly inside [0, 1] (of an
        attracting surface, ``att``) → sliding with α₀ = α, else the side of the nearer bound."""
        sl = (al > _ALPHA_EPS) & (al < 1.0 - _ALPHA_EPS)
        if att is not None:
            sl &= att
        new[idx] = torch.where(sl, SLIDING, torch.where(al > 0.5, ACTIVE, INACTIVE))
        alpha0[idx] = torch.where(sl, al, 0.0)

    def _commit(self, old: Tensor, new: Tensor, alpha0: Tensor, counts: dict) -> dict:
        """Set the classified state (a new segment: Baumgarte factors unset); returns ``counts`` with the
        transition counts added."""
        counts.update(_transitions(old, new))
        self.mode = new
        self.alpha0 = alpha0
        self.bg_scale = None
        self.bg_single = None
        self.coinciding = {}
        self._refresh()
        return counts

    def flip(self, ii: Tensor, jj: Tensor, sigma: Tensor | None = None) -> tuple:
        """Switch the non-sliding surfaces ``(ii, jj)`` (index tensors, distinct surfaces) between active and
        inactive, keeping the sliding set (soft crossings); returns the previous state for :meth:`unflip`.

        Only the pattern P and sides σ are updated, not what depends on the sliding set (:meth:`_refresh`);
        ``sigma``: the flipped sides where the caller has them."""
        snap = (self.mode, self.P, self.sigma)
        mode = self.mode.clone()
        mode[ii, jj] = ACTIVE + INACTIVE - mode[ii, jj]
        self.mode = mode
        # the flipped entries of P (0/1) and σ (±1) toggled, as recomputing them from the mode would give
        self.P = self.P.clone()
        self.P[ii, jj] = 1.0 - self.P[ii, jj]
        if sigma is None:
            sigma = self.sigma.clone()
            sigma[ii, jj] = -sigma[ii, jj]
        self.sigma = sigma
        return snap

    def unflip(self, snap: tuple) -> None:
        """Restore the state :meth:`flip` returned."""
        self.mode, self.P, self.sigma = snap

    def _refresh(self) -> None:
        self.P = (self.mode == ACTIVE).to(self.dtype)
        self.sliding = self.mode == SLIDING
        self.sigma = torch.where(self.mode == ACTIVE, 1.0, -1.0).to(self.dtype)
        self.n_sliding = int(self.sliding.sum())

    # -- what every switching system provides --
    @abc.abstractmethod
    def init_mode(self, theta: Tensor) -> None:
        """Set the mode of every surface from the sign of h at the initial state."""

    @abc.abstractmethod
    def surfaces(self, theta: Tensor) -> Tensor:
        """h at ``theta`` `(..., p)`, shape `(..., *S)`."""

    @abc.abstractmethod
    def surface_rates(self, theta: Tensor, theta_dot: Tensor) -> Tensor:
        """ḣ along θ̇ at ``theta``, shape `(..., *S)`."""

    @abc.abstractmethod
    def surfaces_at(self, coeff: Tensor, x: Tensor, idx: Tensor) -> Tensor:
        """h of surfaces ``idx`` (flat indices, `(B,)`) at step fractions ``x`` `(B,)` of a step's dense output
        (coefficients ``coeff`` `(P, p)`)."""

    @abc.abstractmethod
    def error_scale(self, theta: Tensor, z: Tensor, rtol: float, atol: float) -> Tensor:
        """Scale of the error in h implied by the solver tolerance on z, shape `S`."""

    def regularisation_width(self, theta: Tensor, z: Tensor, rtol: float, atol: float) -> Tensor:
        """Half-width ε `S` of each surface's transition band in a regularised bridge (:mod:`.bridge`): the at-zero
        band, 10 error scales."""
        return _ZERO_FACTOR * self.error_scale(theta, z, rtol, atol)

    @abc.abstractmethod
    def velocity(self, tau, theta: Tensor, alpha_ref: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """dz/dτ of the current activation state `(p,)` and the sliding α's (shape `S`, NaN where not sliding; None
        without sliding surfaces). ``alpha_ref``: the α's the equivalent control starts from (default α₀)."""

    @abc.abstractmethod
    def classify(self, tau, theta: Tensor, zero: Tensor, forced: dict | None = None) -> dict:
        """Set the activation state at a segment start (surfaces with |h| ≤ ``zero`` or sliding are classified as
        crossing, sliding or keeping their side; ``forced``: surfaces whose side is imposed, index → mode);
        returns the transition counts (:func:`_transitions` plus ``unresolved``)."""

    # -- optional capabilities --
    def surfaces_and_rates(self, theta: Tensor, theta_dot: Tensor) -> tuple[Tensor, Tensor]:
        """h and ḣ at K states ``theta``, ``theta_dot`` `(K, p)`, shape `(K, *S)` each."""
        return self.surfaces(theta), self.surface_rates(theta, theta_dot)

    def surfaces_and_rates_at(self, theta: Tensor, theta_dot: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """h and ḣ of surfaces ``idx`` (flat indices, `(B,)`) at K states, shape `(K, B)` each (systems with
        ``scans_subsets``)."""
        H, dH = self.surfaces_and_rates(theta, theta_dot)
        return H.flatten(1)[:, idx], dH.flatten(1)[:, idx]

    def project_sliding(self, z: Tensor, theta: Tensor, band: Tensor) -> Tensor | None:
        """z with the sliding surfaces that drifted off h = 0 by more than ``band`` put back on it, or None when
        none did (or the system has no projection)."""
        return None

    def sliding_margins(self, theta: Tensor, alpha: Tensor) -> Tensor:
        """How far each sliding surface is from leaving its sliding mode, shape `S` (inf off the sliding set;
        negative: left). Here the sliding α's distance from [0, 1]'s bounds (``alpha`` from :meth:`velocity`)."""
        return torch.where(self.sliding, torch.minimum(alpha, 1.0 - alpha), math.inf)

    def sliding_room(self, theta: Tensor, alpha: Tensor) -> Tensor:
        """:meth:`sliding_margins` of the sliding surfaces only, `(S,)` in row-major order of the sliding mask (the
        order of ``torch.nonzero(self.sliding)``)."""
        return self.sliding_margins(theta, alpha)[self.sliding]

    def sliding_neuron_margins(self, room: Tensor) -> Tensor:
        """The smallest of :meth:`sliding_room`'s ``room`` `(S,)` per index of the state's last axis (a two-layer net's
        neurons), inf where none slides."""
        per = torch.full(self.sliding.shape[-1:], math.inf, dtype=room.dtype, device=room.device)
        return per.scatter_reduce_(0, torch.nonzero(self.sliding)[:, -1], room, "amin")


@runtime_checkable
class DenseSurfaceRates(Protocol):
    """Capability of a switching system: h and dh/dx of chosen surfaces along a step's dense output, for the
    Newton root finding of events (systems without it get Illinois regula falsi on h alone)."""

    def surface_rates_fn(self, coeff: Tensor, idx: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """x `(B,)` ↦ (h, dh/dx) of surfaces ``idx`` (flat indices, `(B,)`) at step fractions x of the dense
        output with coefficients ``coeff`` `(P, p)`."""
        ...
