"""The Criteo click-log format: 40 tab-separated fields, no header.

``label, I1..I13, C1..C26``: the click label (0 or 1), 13 integer count
features and 26 categorical features hashed to 8 hex characters. An empty
field is a missing value, so a line whose last categoricals are missing ends
in tabs. Unlabelled files (Criteo's test files) have 39 fields.
"""

from __future__ import annotations

LABEL = "label"
INTEGER_COLUMNS = [f"I{i}" for i in range(1, 14)]
CATEGORICAL_COLUMNS = [f"C{i}" for i in range(1, 27)]
FEATURE_COLUMNS = INTEGER_COLUMNS + CATEGORICAL_COLUMNS
FIELD_COUNT = 1 + len(FEATURE_COLUMNS)
