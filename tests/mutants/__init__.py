"""Mutant middleboxes: the built-in ``nat`` and ``monitor`` with exactly one classic FTMB bug each.

Each mutant is loaded like a user's middlebox, e.g.
``--middlebox tests/mutants/nat_mutants.py:NatDirectPoolWrite``, and its docstring says the bug and
what ``ftmbctl verify`` must report for it. ``tests/test_mutants.py`` records each mutant on the
small trace, crashes and recovers it, and checks that verify names the right invariant, variable
and first divergent packet.

The four bug classes (DESIGN §3, §7):

1. a shared write that bypasses the context (no lock, no access count, no PAL, no digest update);
2. a wall-clock read that bypasses ``ctx.clock()`` (``time.time()``: not logged, so a replay
   reads another value);
3. a random draw that bypasses ``ctx.random()`` (Python's ``random`` module);
4. state left out of snapshots (kept on the middlebox object instead of ``ctx.local`` or a
   declared shared variable: a recovery starts with it empty).

Every bug is made to matter on the bundled traces: its effect reaches a logged shared access or a
released output, as it would in a real middlebox. A bug whose effect is invisible cannot be caught
by anyone.

``monitor_mutants.MonitorRandomSkip`` is a fifth monitor mutant, outside the four classes: an
unlogged draw that decides whether a shared access happens at all. verify catches it, but names
the wrong first packet when the replay skips a logged access (an xfail test documents this).

Both modules hold a ``_Hooked*`` base class: the built-in's ``process`` split at the places the
mutants change, and otherwise identical to the built-in (``tests/test_mutants.py`` checks that
the bases give the built-in's outputs and state, so each mutant differs by its one bug).
"""
