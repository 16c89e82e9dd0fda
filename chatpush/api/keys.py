"""Typed application keys shared by the edges (aiohttp ``AppKey``s instead of globals)."""

from __future__ import annotations

from aiohttp import web

from chatpush.chat.service import ChatService
from chatpush.clock import Clock
from chatpush.config import Settings
from chatpush.store.database import Database

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
CLOCK = web.AppKey("clock", Clock)
CHATS = web.AppKey("chats", ChatService)
