"""What a run keeps on disk: its directory layout and atomic writes (``run_dir.py``), one
writer at a time (``locking.py``) and the report of its tables (``report.py``)."""
from epkd_tf.records.run_dir import (FINAL, LOCK_NAME, SIDE_BY_SIDE_FORMATS,  # noqa: F401
                                     TABLES, TMP_PREFIX, DamagedRunError, RunDir,
                                     RunDirError, check_output_dir, file_digest, safe_name)
