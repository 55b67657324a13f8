"""Model code that travels to the Hugging Face Hub with every saved model.

Each folder below holds exactly the files ``save_pretrained`` copies next to the weights; they import only the
standard library, torch, transformers and each other, because on the Hub they run without this package. The
folders are namespace packages (no ``__init__.py``) so that nothing but those files lives there.
"""
