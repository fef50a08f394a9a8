"""The gateway's side of chat: `/api/chat/*` REST, `WS /api/chat/connect`, and the fan-out from
chat's Redis channels to the WebSocket clients of this process (docs/chat.md).

routes.py (REST, thin) and ws.py (the WebSocket endpoint) call chat through client.py; hub.py
keeps who follows which room and delivers (fanout.py feeds it from Redis, connection.py writes
to each client); frames.py is the wire format, runtime.py what lives as long as the app.
"""
