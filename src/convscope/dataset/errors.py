"""Errors of the ``dataset`` package (all ``ConvscopeError`` subclasses)."""

from __future__ import annotations

from convscope.errors import ConvscopeError, InputError


class EmptyDatasetError(InputError):
    """A data source that holds no readable images (an empty folder, an empty array or iterable)."""


class NotAvailableError(ConvscopeError, NotImplementedError):
    """An option that exists in the API but is not implemented in this release (e.g. ``store=``)."""


class StoreMismatchError(ConvscopeError):
    """A scan store written by another scan (model, preprocessing, data, layers, k or shard size differ)."""
