"""Persistence: the only package that imports aiosqlite."""

from runnerd.store.connection import Database
from runnerd.store.jobs import AgreementInUse, JobStore, OwnerLimit, QueueFull, StepRecord
from runnerd.store.orders import OrderUsed

__all__ = ["Database", "JobStore", "StepRecord", "QueueFull", "AgreementInUse", "OwnerLimit", "OrderUsed"]
