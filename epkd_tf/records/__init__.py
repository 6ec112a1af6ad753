"""What a run keeps on disk: its directory's paths, lock and atomic writes
(``run_dir.py``), its CSV tables (``tables.py``), its record of completed stages
(``stages.py``), one writer at a time (``locking.py``) and the report of its tables
(``report.py``)."""
from epkd_tf.files import TMP_PREFIX, file_digest, safe_name  # noqa: F401
from epkd_tf.errors import DamagedRunError, RunDirError  # noqa: F401
from epkd_tf.records.run_dir import LOCK_NAME, RunDir, check_output_dir  # noqa: F401
from epkd_tf.records.stages import FINAL, PROGRESS, StageLedger  # noqa: F401
from epkd_tf.records.tables import SIDE_BY_SIDE_FORMATS, TABLES, TableStore  # noqa: F401
