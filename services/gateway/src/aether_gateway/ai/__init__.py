"""The AI side of the gateway: `/api/ai/*` REST, the SSE stream and `WS /ws/ai-chat`, all over
ai's AiService (gRPC). The public protocol is docs/ai.md."""
