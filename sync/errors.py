"""Errors of the sync package."""


class SyncError(RuntimeError):
    """Root error of the sync package: a model cannot be published, loaded or served."""


class DumpError(SyncError):
    """A full dump is missing, incomplete or unreadable."""
