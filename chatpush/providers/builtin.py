"""The providers shipped with chatpush: importing this module registers them."""

from chatpush.providers import apns, ccwebhook, comet, customhttp, fcm, httpcb

__all__ = ["apns", "ccwebhook", "comet", "customhttp", "fcm", "httpcb"]
