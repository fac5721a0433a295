"""Operations: the operator's questions about a deployed stack, answered from its own state.

``bmsuploader status`` (is every source healthy, what waits where, what did this
month cost), ``explain`` (what happened to one upload) and ``redrive`` (send
dead-lettered entries again). They find the stack's parts through its
CloudFormation outputs (:mod:`~bmsuploader.ops.stack`) and read them with the
same state, queue and settings code the functions use; only ``redrive`` writes.
"""
