"""graphspec: a declarative graph language for PyTorch, with Deeplearning4j ComputationGraph semantics."""
from .openmp import shorten_idle_spin

shorten_idle_spin()  # before anything below imports torch: libgomp reads GOMP_SPINCOUNT once, as torch loads it

from .compiler import build  # noqa: E402
from .errors import GraphspecError, Location, Problem, SpecError  # noqa: E402
from .graph import Analysis, analyze  # noqa: E402
from .spec.loader import load_spec  # noqa: E402
from .probe import feed_forward  # noqa: E402
from .model_io import load, load_weights, save  # noqa: E402
from .opening import open, open_spec  # noqa: E402
from .spec.model import Spec, Vertex  # noqa: E402
from .surgery import GraphBuilder, SurgeryReport, snip  # noqa: E402

__version__ = "0.1.0"
__all__ = ["open", "open_spec", "build", "load_spec", "analyze", "summarize", "save", "load", "load_weights",
           "GraphBuilder", "snip", "SurgeryReport", "feed_forward", "Spec", "Vertex", "Analysis", "GraphspecError",
           "SpecError", "Problem", "Location", "import_model", "__version__"]


def import_model(path, *, name: str | None = None, format: str | None = None):
    """An ONNX (``.onnx``), Keras (``.keras``, ``.h5``) or dlib face-recognition (``.dat``) model file as an
    :class:`graphspec.importers.Imported`: a readable spec (``document``) with its weights; ``.write(folder)``
    writes NAME.yaml and NAME.safetensors, ``.model()`` builds it (docs/import.md)."""
    from .importers import import_model as _import_model
    return _import_model(path, name=name, format=format)


def summarize(source, batch_size: int = 1):
    """A :class:`graphspec.summary.Summary` (rows in topological order, totals) of anything :func:`open` accepts:
    a built module, a spec, a model file or a catalogued model's name (a model's frozen vertices marked)."""
    from .summary import summarize as _summarize
    spec, frozen = open_spec(source)
    return _summarize(spec, batch_size=batch_size, frozen=set(frozen))
