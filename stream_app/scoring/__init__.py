"""Model bundles and ONNX scoring (docs/design.md, "Models").

- :func:`load_bundle` reads and verifies a bundle directory -> :class:`ModelBundle`;
- :class:`Scorer` scores feature batches -> :class:`ScoreBatch` (higher = more suspicious).
"""

from stream_app.scoring.bundle import ModelBundle, load_bundle
from stream_app.scoring.scorer import Explanation, Reason, ScoreBatch, Scorer

__all__ = ["Explanation", "ModelBundle", "Reason", "ScoreBatch", "Scorer", "load_bundle"]
