"""Where streamtrain keeps things on disk when run from a checkout."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
JARS_DIR = Path(os.environ.get("STREAMTRAIN_JARS_DIR", REPO_ROOT / "infra" / "jars"))
STATE_DIR = Path(os.environ.get("STREAMTRAIN_STATE_DIR", REPO_ROOT / ".streamtrain"))
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
