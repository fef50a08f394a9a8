"""The gateway's side of chat: `/api/chat/*` REST, `WS /api/chat/connect`, and the fan-out from
chat's Redis channels to the WebSocket clients of this process (docs/chat.md).

routes.py (REST, thin) and ws.py (the socket, on the shared lifecycle of ../ws/) call chat
through client.py; hub.py keeps who follows which room and delivers (fanout.py feeds it from
Redis; each connection's queue and writer are ../ws/connection.py); frames.py is chat's wire
format, runtime.py what lives as long as the app.
"""
