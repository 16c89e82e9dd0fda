"""Typed application keys shared by the edges (aiohttp ``AppKey``s instead of globals)."""

from __future__ import annotations

from aiohttp import web

from chatpush.api.access import KeyRing
from chatpush.chat.service import ChatService
from chatpush.clock import Clock
from chatpush.cometd import BayeuxServer
from chatpush.config import Settings
from chatpush.delivery.dispatcher import Dispatcher
from chatpush.metrics import Metrics
from chatpush.push.credentials import CredentialVault
from chatpush.push.pipeline import PushPipeline
from chatpush.routing.router import Router
from chatpush.store.database import Database

SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", KeyRing)
DATABASE = web.AppKey("database", Database)
CLOCK = web.AppKey("clock", Clock)
CHATS = web.AppKey("chats", ChatService)
METRICS = web.AppKey("metrics", Metrics)
PIPELINE = web.AppKey("pipeline", PushPipeline)
ROUTER = web.AppKey("router", Router)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
COMETD = web.AppKey("cometd", BayeuxServer)
INSTANCE_ID = web.AppKey("instance_id", str)
VAULT = web.AppKey("vault", CredentialVault)
