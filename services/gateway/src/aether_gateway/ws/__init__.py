"""The one lifecycle of a client WebSocket, shared by chat's `WS /api/chat/connect` and
`WS /ws/ai-chat` (docs/chat.md, docs/ai.md).

session.py drives a socket from connect to close: accept, the handshake (handshake.py: origin,
no token in the URL, the access token from the header or a first auth frame, revocation and the
HTTP rate limit), then a reader and a writer task per connection until it ends, and the close
frame. connection.py is the connection: a bounded outbound queue drained by its writer (a client
that does not read is closed 4009), the client-frame rate log, the close request. liveness.py
closes idle connections and expired tokens and sends heartbeats; close_codes.py and frames.py
are what every socket puts on the wire. Each socket (chat/ws.py, ai/ws.py) keeps its protocol:
its frames, what its ready frame says, how it answers each client frame.
"""
