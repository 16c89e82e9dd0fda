"""The providers shipped with chatpush: importing this module registers them."""

from chatpush.providers import apns, comet, customhttp, fcm, httpcb

__all__ = ["apns", "comet", "customhttp", "fcm", "httpcb"]
