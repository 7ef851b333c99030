"""Drives novapay's MCP server with the official MCP Python SDK (`mcp` on PyPI) for tests/it/mcp.rs.

Usage: mcp_client.py '<json plan>'. The plan names the transport and the steps:
  {"stdio": {"command": ..., "args": [...], "env": {...}, "cwd": ...}}  or
  {"http": {"url": ..., "key": ...}},
  "steps": {"search": {...args}, "search_invalid": {...}, "ask": {...args}, "ask_again": {...},
            "resources": true, "read_missing": uri}
Prints one JSON object with what each step returned (or {"error": ...} when connecting failed).
"""

import asyncio
import json
import sys

import httpx2
import mcp
from mcp.client.streamable_http import streamable_http_client


def tool_result(r):
    return {
        "is_error": bool(r.is_error),
        "text": "\n".join(getattr(c, "text", "") for c in r.content),
        "structured": r.structured_content,
    }


async def run(plan):
    if "stdio" in plan:
        s = plan["stdio"]
        server = mcp.StdioServerParameters(
            command=s["command"], args=s.get("args", []), env=s.get("env"), cwd=s.get("cwd")
        )
        http_client = None
    else:
        h = plan["http"]
        headers = {"Authorization": f"Bearer {h['key']}"} if h.get("key") else {}
        http_client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(300.0))
        server = streamable_http_client(h["url"], http_client=http_client)
    out = {}
    steps = plan.get("steps", {})
    try:
        async with mcp.Client(server, read_timeout_seconds=300) as client:
            tools = await client.list_tools()
            out["tools"] = {
                t.name: {"description": t.description, "input_schema": t.input_schema} for t in tools.tools
            }
            if "search" in steps:
                out["search"] = tool_result(await client.call_tool("search_knowledge_base", steps["search"]))
            if "search_invalid" in steps:
                out["search_invalid"] = tool_result(
                    await client.call_tool("search_knowledge_base", steps["search_invalid"])
                )
            for step in ("ask", "ask_again"):
                if step in steps:
                    out[step] = tool_result(await client.call_tool("ask", steps[step]))
            if steps.get("resources"):
                listed = await client.list_resources()
                out["resources"] = [
                    {"uri": r.uri, "name": r.name, "title": r.title, "mime_type": r.mime_type}
                    for r in listed.resources
                ]
                if listed.resources:
                    read = await client.read_resource(listed.resources[0].uri)
                    out["read"] = [{"uri": c.uri, "text": getattr(c, "text", None)} for c in read.contents]
            if "read_missing" in steps:
                try:
                    await client.read_resource(steps["read_missing"])
                    out["read_missing"] = {"refused": False}
                except mcp.MCPError as e:
                    out["read_missing"] = {"refused": True, "code": e.error.code, "message": e.error.message}
    except Exception as e:  # connecting or the handshake failed: report it, the test decides
        out["error"] = f"{type(e).__name__}: {e}"
        causes = []
        seen = e
        while seen is not None and len(causes) < 5:
            causes.append(f"{type(seen).__name__}: {seen}")
            seen = seen.__cause__ or seen.__context__
            if isinstance(seen, BaseExceptionGroup):
                causes.extend(f"{type(x).__name__}: {x}" for x in seen.exceptions)
                break
        out["error_chain"] = causes
    finally:
        if http_client is not None:
            await http_client.aclose()
    return out


if __name__ == "__main__":
    result = asyncio.run(run(json.loads(sys.argv[1])))
    print(json.dumps(result, ensure_ascii=False, default=str))
