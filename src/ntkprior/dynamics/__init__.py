"""Time and real training: closed-form linearised dynamics (``linearized``), training finite and
linearised networks (``training``, ``_stacked``) and why they depart from the kernel (``diagnose``)."""
