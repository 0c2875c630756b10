"""Persistence: the only package that imports aiosqlite."""

from runnerd.store.connection import Database
from runnerd.store.jobs import AgreementInUse, JobStore, OrderUsed, OwnerLimit, QueueFull, StepRecord

__all__ = ["Database", "JobStore", "StepRecord", "QueueFull", "AgreementInUse", "OwnerLimit", "OrderUsed"]
