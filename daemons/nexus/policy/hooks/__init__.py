"""Hook implementations, one module per type, and ``registry`` to build them by name.  Pure.

``base`` defines what a hook is (``PureHook``, ``IOHook``, ``HookContext``,
``HookError``); ``scanning`` is the common part of the four content hooks.
"""
