"""Filippov handling of ReLU kinks: event-located switching and sliding modes of mirror flow.

ReLU and leaky-ReLU networks make the mirror-flow field dz/dτ = Σ_i c_i ∇q_i(θ), θ = ∇Φ*(z), discontinuous on
the **switching surfaces** h_ij(θ) = 0 (pre-activation of hidden unit j on data point i). Integrating straight
through them makes an adaptive Runge–Kutta solver chatter (tiny steps, first-order balance drift). The
:class:`FilippovDriver` integrates the flow in the sense of Filippov instead (Stewart's active-set method):

1. **Activation state per surface** (:mod:`.state`): active (relu′ = 1), inactive (relu′ = 0 — leaky: the
   negative slope) or sliding (relu′ = α ∈ [0, 1], the Filippov convex combination). Within a *segment* the field
   of that fixed state is smooth and is integrated by torchdiffeq's adaptive RK (dopri5 by default;
   :mod:`.driver`).
2. **Events** (:mod:`.events`): after every *accepted* step the signed pre-activations σ_ij h_ij (σ = +1 active,
   −1 inactive) are evaluated along the step's dense output at 9 points, with a Hermite check for a dip below
   zero between samples (a surface can be crossed and re-crossed inside one step). Roots are located on the
   dense output for all brackets at once (bracketed Newton with ḣ along the dense output, one inverse mirror map
   per iteration; Illinois regula falsi for systems without ḣ there). Then either
   * **exact restart** (every step that is not a "soft" one below): the state at the earliest event time is the
     step's dense output where that agrees with the cubic Hermite interpolant of the step's ends to within the
     error tolerance, with every neuron's balance B_j restored to its value at the step start (two-layer nets);
     otherwise the step is **redone** from its start to the event (a full RK step: the dense output alone,
     ``event_state="interpolate"``, is 4th order and less accurate), and a new segment starts there; or
   * **soft crossings** (:mod:`.soft`, corrections in :mod:`.crossings`; in Radau steps with the stiff coupling
     of :mod:`.exponential`; ``soft_crossings=True``, default): crossings that are transversal (both
     one-sided fields move h the same way at the crossing, ḣ along the piecewise field) and touch no sliding
     neuron or point are switched inside the step, and the state corrected in closed form — the pattern
     difference of the crossed points, integrated from each crossing time on along the dense output
     (Gauss–Legendre on per-point pattern levels, no RHS evaluation; hundreds of crossings cost about one field
     evaluation). When all of the step's crossings qualify the whole step is kept; otherwise the step is
     **truncated** at the first crossing that does not (its state from the dense output where that agrees with
     a Hermite interpolant, else by a redo RK step; the earlier crossings corrected) and that crossing is
     classified at the next segment start. The corrected state must leave every other surface on its side
     (else fewer crossings are kept). The coupling (the field's response to the moved state, second order) is
     measured with the evaluation the next segment needs anyway and added (J·∫Δz dτ along Δz, one more
     evaluation at the corrected state; the part of ∫Δz dτ not along Δz by one more difference of the field
     where it exceeds ``soft_fraction`` (0.1) of the step's error tolerance); the added term must stay below
     ``soft_cap`` (1) of the tolerance (else the kept part is shortened once, then an exact restart). The global
     error stays at the order of rtol, as with exact restarts, for fewer RHS evaluations where crossings crowd.
     Balance is restored for every neuron (second-order defect) and the coupling term keeps it to first order.
     ``solver_options={"soft_crossings": False}`` restarts at every crossing.
3. **Crossing vs sliding vs grazing** is decided at every segment start from the one-sided fields, for all
   surfaces at zero (|h| ≤ tolerance) at once, by the box-LCP of each neuron (below, :mod:`.lcp`), not from the
   side the event fired on. Sliding surfaces whose α sits at a bound with ḣ pointing away are released there.
4. **Sliding** (two-layer nets, :mod:`.two_layer`): for neuron j with sliding set S, ż_{w_j} = u + Σ_{k∈S} r_k α_k
   x_k with u the field at α = 0, r_k = (1 − s₋) a_j c_k y_k, and ẇ_j = D_j ż_{w_j}, D_j = diag(1/φ″(w_j)). With
   A = D_j^{1/2} X_Sᵀ diag(−r) (columns −r_k D_j^{1/2} x_k) and t = D_j^{1/2} u,

       diag(−r) ḣ_S = Aᵀ(t − Aα),

   so for an attracting surface (r_k < 0) the Filippov conditions — ḣ_k = 0 for 0 < α_k < 1, ḣ_k ≤ 0 at
   α_k = 0, ḣ_k ≥ 0 at α_k = 1 — are exactly the KKT conditions of the bounded least-squares problem
   min_{α∈[0,1]^S} ½‖Aα − t‖², i.e. of the convex box-QP min ½αᵀ(AᵀA)α − (Aᵀt)ᵀα. It is solved by
   bounded-variable least squares (scipy BVLS), which handles a singular AᵀA (more sliding surfaces than
   input dimensions); ḣ_S and the velocity are unique even when α is not. Inside a sliding segment α is
   the equivalent control: the minimum-change solution of Aᵀ(t − Aα) = −λ diag(−r) h_S, i.e. ḣ_S = −λ h_S.
   The small Baumgarte term λ h_S (λ = the state's relative rate at the segment start) pulls numerical drift
   back to the surface *without a projection*: every fixed-pattern field — whatever α — conserves the
   per-neuron balance B_j = Σ_k Q(w_jk) − Q(a_j) exactly (d/dτ B_j = a_j Σ_i c_i y_i g_ij h_ij −
   a_j Σ_i c_i y_i g_ij h_ij = 0), so the balance drift measures the integration error alone. The segment
   ends when some α_k leaves [0, 1] (located like a crossing, on the dense output). Where the Baumgarte term
   cannot hold the surface — the metric D singular or not smooth where a sliding neuron's weight passes through
   0: p-power terms |x|^{p−2} in φ″ (PPower with p > 2, PPowerPlusQuadratic) — a sliding surface more than 100
   error scales off h = 0 after a step ends the segment, and at every segment start sliding surfaces outside the
   at-zero band are projected back along X_Sᵀ μ (:meth:`_TwoLayerSwitching.project_sliding`; balance changes at
   second order; stats ``n_sliding_projections``, ``max_projected_offset``); deep nets project all their
   sliding surfaces at once (:meth:`_DeepSwitching.project_sliding`).
5. **Deep ReLU nets** (:class:`~flowsim.models.DeepReLU`, :mod:`.deep`): the surfaces are the hidden
   pre-activations h⁽ˡ⁾_ij of every layer; within a segment the pattern of every layer is fixed (closed-form
   backpropagation through it). Crossings are located and stepped to exactly (no soft crossings). Sliding: on
   h_k = 0 the unit's output α h_k vanishes whatever α, so f_i and c_i do not depend on α and ∇f_i is affine in
   α with slope u_k ∇h_k (u_k = ∂f_i/∂a_k); the Filippov field is v₀ + Σ_k r_k α_k ∇h_k, r_k = c_i y_i u_k — the
   two-layer structure with rows ∇h_k, one box-LCP for all sliding surfaces (they couple through shared
   layers). The surfaces at zero of all layers are classified together (one complementarity problem). Where a
   point slides in two layers at once its field is multilinear in those α's; the Filippov set on such an
   intersection does not give a unique velocity, and flowsim takes the multilinear ("canopy") combination of
   the neighbouring patterns' fields (Jeffrey, Physica D 2014) — the ε → 0 limit of the net with its ReLU
   smoothed on a scale ε — whose α's solve a nonlinear complementarity problem, by Newton on the single-layer
   problem at the current α's (stats ``n_multilayer_segments``, ``n_multilayer_unconverged``). A point's
   pre-activations above a layer where none of its units is clearly active are not switching surfaces of their
   own: exactly 0 (no unit at zero either) or proportional to the one unit at zero (the master), whose
   classification they follow with the pattern of its active side; they are not watched for events.
   ``kinks="auto"`` uses Filippov for deep nets too (:func:`auto_filippov`: naive stepping chatters on their
   sliding modes and can stall; where crossings crowd, exact kinks cost more).

Generic piecewise-affine systems ẏ = f₀ + F₁σ run on the same event core (:mod:`.affine`,
:func:`solve_filippov`). Run statistics: :mod:`.stats`.

Time: the integration variable τ is log-time s = log(1 + t) by default (``time="log"``), plain t otherwise;
all times in :meth:`FilippovDriver.stats` are in τ.

References:
    Filippov, "Differential Equations with Discontinuous Righthand Sides", Kluwer, 1988.
    Stewart, "A high accuracy method for numerical treatment of discontinuous ordinary differential
    equations", Numerische Mathematik 58, 1990.
    Acary & Brogliato, "Numerical Methods for Nonsmooth Dynamical Systems", Springer, 2008 (LCP view).
    Dieci & Lopez, "Sliding motion in Filippov differential systems: theoretical results and a computational
    approach", SIAM J. Numer. Anal. 47, 2009.
    Stark & Parker, "Bounded-variable least-squares: an algorithm and applications", Comput. Statist. 10, 1995.
"""

from ...analysis.activation import activation_summary
from .affine import PiecewiseAffineSystem, solve_filippov
from .driver import FILIPPOV_OPTIONS, RK_OPTIONS, FilippovDriver
from .implicit import IMPLICIT_FILIPPOV_OPTIONS, ImplicitFilippovDriver
from .state import ACTIVE, INACTIVE, SLIDING, FilippovInvariantError
from .support import auto_filippov, supports

__all__ = [
    "IMPLICIT_FILIPPOV_OPTIONS",
    "ImplicitFilippovDriver",
    "ACTIVE",
    "FILIPPOV_OPTIONS",
    "INACTIVE",
    "RK_OPTIONS",
    "SLIDING",
    "FilippovDriver",
    "FilippovInvariantError",
    "PiecewiseAffineSystem",
    "activation_summary",
    "auto_filippov",
    "solve_filippov",
    "supports",
]
