"""The analysis of the document that started the project ("The Neural Tangent Kernel as a prior",
SERI MATS 2022), as four studies on built-in or the user's data: eigenmodes (``eigen``), the prior
over labels (``prior``), training against theory (``training``) and simplicity (``simplicity``);
``settings`` holds the sizes, architectures and data they run on."""
