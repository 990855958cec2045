"""Analyses computed from the model rather than by stepping it, as ``tvb.analyzers``.

``balloon``       the Balloon-Windkessel BOLD model (TVB's ``fmri_balloon.BalloonModel`` analyzer), streaming
``linear``        the analytic (BOLD) FC of the network linearised around its low fixed point
``fic``           feedback inhibition control: J_i for a target excitatory rate (Deco et al. 2014)
``bifurcation``   each node's stability near the fold, the penalty keeping it there, the fold curve

Shared by linear, fic and bifurcation (layers import downwards only):

``rootfind``      one Newton iteration, one implicit-function step, one ``FixedPoint`` (knows no model)
``values``        parameter values of a simulator, public layout -> internal (``registry.to_internal``)
``network``       a simulator's vector field without delays: the coupling port on the state, ``Problem``,
                  the network Jacobian and fixed point
``low_state``, ``stability``, ``node_problem``, ``fold_curve``   the parts of the bifurcation analysis
"""
