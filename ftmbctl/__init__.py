"""ftmbctl: rollback-recovery for middleboxes (FTMB), offline on pcaps."""

__version__ = "0.1.0"
