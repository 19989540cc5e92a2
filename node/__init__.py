"""One host's runtime: the Supervisor at the root of its actor tree, and the launcher.

It sits above the actors it creates (`clarion.actors`) and the plain policies it applies
(`clarion.supervision`): nothing below imports it (tests/test_layering.py).
"""
