"""What mmengine's current logger printed while a function ran (tests only)."""
import logging

from mmengine.logging import MMLogger


def logged(fn):
    """``(fn(), [messages logged by mmengine's current logger meanwhile])``."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        out = fn()
    finally:
        logger.removeHandler(handler)
    return out, [r.getMessage() for r in records]
