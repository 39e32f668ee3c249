#!/usr/bin/env python3
"""A WS-Management (WinRS shell) endpoint on loopback that behaves like Windows, for tests.

Started by the Rust harness (`tests/src/winrm.rs`) from the virtualenv that
`tests/setup/install-winrm-venv.sh` creates (pyspnego, cryptography, pywinrm).

    server.py --state-dir DIR --auth basic|ntlm [--tls] [--bind 127.0.0.1] [--port 0]
              --username USER --password-file FILE [--allow-unencrypted] --scenario FILE

On start it binds (port 0 = any free port), and writes DIR/ready.json:
    {"port": N, "url": "...", "pid": N, "cert_file": ..., "ca_file": ..., "cert_sha256": "hex"}
Every HTTP request is logged as one JSON line in DIR/requests.jsonl (never the password or
authorization tokens). The scenario file is re-read on every Command, so a test may change it
between runs. Scenario format: see tests/winrm/README.md.

Protocol behaviour copied from real Windows (see /work/shared/fixtures/winrm-recordings):
Create answers with both a ShellId selector and rsp:ShellId; Receive long-polls and answers
the w:TimedOut fault (2150858793) as HTTP 500; output comes as base64 rsp:Stream chunks, then
End="true" markers and CommandState Done + ExitCode; unknown shells fault with
w:InvalidSelectors (2150858843). NTLM is connection-bound (HTTP.sys) and bodies are sealed in
multipart/encrypted (MS-WSMV 2.2.9.1); a plaintext body over HTTP is refused unless
--allow-unencrypted (Windows' AllowUnencrypted=false default).
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import http.server
import ipaddress
import itertools
import json
import os
import re
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTIONS = {
    TRANSFER + "Create": "Create",
    TRANSFER + "Delete": "Delete",
    SHELL + "Command": "Command",
    SHELL + "Receive": "Receive",
    SHELL + "Send": "Send",
    SHELL + "Signal": "Signal",
}
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
CMD_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
STATE_RUNNING = SHELL + "CommandState/Running"
STATE_DONE = SHELL + "CommandState/Done"
SOAP_CT = "application/soap+xml;charset=UTF-8"
SPNEGO_ENC = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CT = 'multipart/encrypted;protocol="%s";boundary="Encrypted Boundary"' % SPNEGO_ENC
BOUNDARY = b"--Encrypted Boundary"
# cmd.exe's command-line limit; WinRS runs commands through cmd.exe unless WINRS_SKIP_CMD_SHELL.
CMD_LINE_LIMIT = 8191

CODE_TIMED_OUT = 2150858793
CODE_INVALID_SELECTORS = 2150858843
CODE_ACTION_NOT_SUPPORTED = 2150858754
CODE_SCHEMA_INVALID = 2150858817

REPLY_DEFAULTS = {
    "stdout": "",
    "stderr": "",
    "stdout_base64": None,
    "stderr_base64": None,
    "exit_code": 0,
    "timeouts": 0,
    "timeout_wait_ms": 50,
    "chunk_size": 1024,
    "chunks_per_receive": 4,
    "delay_ms": 0,
    "hang": False,
    "receives": None,
}


class Fault(Exception):
    """A WS-Management fault, answered as HTTP 500 with an s:Fault body."""

    def __init__(self, code, subcode, reason, value="s:Sender"):
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.value = value


def invalid_shell(shell_id):
    return Fault(
        CODE_INVALID_SELECTORS,
        "w:InvalidSelectors",
        "The request for the Windows Remote Shell with ShellId %s failed because the shell was "
        "not found on the server. Possible causes are: the specified ShellId is incorrect or the "
        "shell no longer exists on the server. Provide the correct ShellId or create a new shell "
        "and try again. " % shell_id,
    )


def timed_out():
    return Fault(
        CODE_TIMED_OUT,
        "w:TimedOut",
        "The WS-Management service cannot complete the operation within the time specified in "
        "OperationTimeout.  ",
        value="s:Receiver",
    )


def new_id():
    return str(uuid.uuid4()).upper()


def iso_duration_seconds(text, default=20.0):
    """PT20S / PT20.000S / PT1M -> seconds."""
    m = re.fullmatch(r"P(?:\d+D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", (text or "").strip())
    if not m:
        return default
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


# --------------------------------------------------------------------------------------------
# Scenario: what a command answers.


def load_scenario(path):
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("scenario must be a JSON object")
    return data


def resolve_reply(scenario, script):
    """The reply for `script`: the first rule whose `contains` all occur in it, else default."""
    for index, rule in enumerate(scenario.get("rules") or []):
        needles = rule.get("contains", [])
        if isinstance(needles, str):
            needles = [needles]
        if all(n in script for n in needles):
            return index, merged(rule)
    return None, merged(scenario.get("default") or {})


def merged(reply):
    out = dict(REPLY_DEFAULTS)
    out.update({k: v for k, v in reply.items() if k != "contains"})
    return out


def stream_bytes(reply, name):
    if reply.get(name + "_base64") is not None:
        return base64.b64decode(reply[name + "_base64"])
    return (reply.get(name) or "").encode("utf-8")


def chunks(data, size):
    size = max(1, int(size))
    return [data[i : i + size] for i in range(0, len(data), size)]


def item_parts(item, name, size):
    """(stream, bytes) chunks of one stream; a list of strings gives the chunks explicitly."""
    value = item.get(name)
    if isinstance(value, list):
        return [(name, c.encode("utf-8")) for c in value]
    encoded = item.get(name + "_base64")
    if isinstance(encoded, list):
        return [(name, base64.b64decode(c)) for c in encoded]
    return [(name, c) for c in chunks(stream_bytes(item, name), size)]


def build_steps(reply):
    """Receive responses for a reply: "timeout" or (list of (stream, bytes), done)."""
    size = reply["chunk_size"]
    if reply.get("receives") is not None:
        steps = []
        items = reply["receives"]
        for i, item in enumerate(items):
            if item == "timeout":
                steps.append("timeout")
                continue
            parts = item_parts(item, "stdout", size) + item_parts(item, "stderr", size)
            done = item.get("done", i == len(items) - 1)
            steps.append((parts, done))
        if not steps or steps[-1] == "timeout" or not steps[-1][1]:
            steps.append(([], True))
        return steps
    steps = ["timeout"] * int(reply["timeouts"])
    parts = [("stdout", c) for c in chunks(stream_bytes(reply, "stdout"), size)]
    parts += [("stderr", c) for c in chunks(stream_bytes(reply, "stderr"), size)]
    per = max(1, int(reply["chunks_per_receive"]))
    groups = [parts[i : i + per] for i in range(0, len(parts), per)] or [[]]
    for i, group in enumerate(groups):
        steps.append((group, i == len(groups) - 1))
    return steps


# --------------------------------------------------------------------------------------------
# Command lines.


STDIN_READER = re.compile(r"\$input\b|\[(System\.)?Console\]::In\b", re.IGNORECASE)


def decode_command_line(command, arguments):
    """(command_line, script, source, reads_stdin) for a CommandLine element."""
    line = " ".join([command] + arguments).strip()
    tokens = line.split()
    for i, tok in enumerate(tokens[:-1]):
        flag = tok.lower().lstrip("-/")
        if tok[:1] in "-/" and flag and (flag == "ec" or "encodedcommand".startswith(flag)):
            if flag in ("e", "ec") or len(flag) >= 2:
                try:
                    raw = base64.b64decode(tokens[i + 1], validate=True)
                    script = raw.decode("utf-16-le")
                    # A bootstrap that reads its real script from stdin (`$input`,
                    # [Console]::In) waits, like PowerShell, for the input to end.
                    return line, script, "encoded", bool(STDIN_READER.search(script))
                except (binascii.Error, UnicodeDecodeError):
                    return line, None, "encoded-invalid", False
        if tok[:1] in "-/" and flag and "command".startswith(flag) and tokens[i + 1] == "-":
            return line, None, "stdin", True
    return line, line, "command_line", False


# --------------------------------------------------------------------------------------------
# Responses, shaped like the recordings.


def envelope(action, relates_to, body, extra_ns="", activity_id=False):
    # Newer Windows builds add a p:ActivityId header (test_winrs_unicode.yml); older ones do not.
    activity = "<p:ActivityId>%s</p:ActivityId>" % new_id() if activity_id else ""
    return (
        '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" %s'
        'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
        'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
        'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
        "<s:Header><a:Action>%s</a:Action><a:MessageID>uuid:%s</a:MessageID>%s"
        "<a:To>%s</a:To><a:RelatesTo>%s</a:RelatesTo></s:Header>"
        "<s:Body>%s</s:Body></s:Envelope>"
        % (extra_ns, action, new_id(), activity, ANONYMOUS, escape(relates_to or ""), body)
    )


def fault_envelope(fault, relates_to, machine, activity_id=False):
    body = (
        "<s:Fault><s:Code><s:Value>%s</s:Value><s:Subcode><s:Value>%s</s:Value></s:Subcode>"
        '</s:Code><s:Reason><s:Text xml:lang="en-US">%s</s:Text></s:Reason><s:Detail>'
        '<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
        'Code="%d" Machine="%s"><f:Message>%s</f:Message></f:WSManFault></s:Detail></s:Fault>'
        % (
            fault.value,
            fault.subcode,
            escape(fault.reason),
            fault.code,
            escape(machine),
            escape(fault.reason),
        )
    )
    ns = (
        'xmlns:e="http://schemas.xmlsoap.org/ws/2004/08/eventing" '
        'xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" '
    )
    return envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, body, ns, activity_id)


# --------------------------------------------------------------------------------------------
# State.


class Command:
    def __init__(self, command_id, line, script, source, reads_stdin, skip_cmd):
        self.id = command_id
        self.line = line
        self.script = script
        self.source = source
        self.reads_stdin = reads_stdin
        self.skip_cmd = skip_cmd
        self.stdin = b""
        self.stdin_done = not reads_stdin
        self.steps = None
        self.step = 0
        self.reply = None
        self.rule = None
        self.signals = []


class Shell:
    def __init__(self, shell_id, owner):
        self.id = shell_id
        self.owner = owner
        self.commands = {}


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Condition()
        self.shells = {}
        self.log_lock = threading.Lock()
        self.seq = itertools.count(1)
        self.conn_seq = itertools.count(1)
        self.log_path = os.path.join(args.state_dir, "requests.jsonl")
        self.stopping = threading.Event()

    def log(self, entry):
        entry["seq"] = next(self.seq)
        entry["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self.log_lock:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()


# --------------------------------------------------------------------------------------------
# WS-Man operations.


def text_of(elem):
    return (elem.text or "") if elem is not None else ""


def selector_shell_id(header):
    for sel in header.findall("wsman:SelectorSet/wsman:Selector", NS):
        if sel.get("Name") == "ShellId":
            return (sel.text or "").strip()
    return None


def options(header):
    return {
        o.get("Name"): (o.text or "")
        for o in header.findall("wsman:OptionSet/wsman:Option", NS)
    }


class WsMan:
    def __init__(self, state, activity_id=False):
        self.state = state
        self.args = state.args
        self.activity_id = activity_id

    def env(self, action, relates_to, body):
        return envelope(action, relates_to, body, activity_id=self.activity_id)

    def handle(self, xml_bytes, ctx, entry):
        """Returns the response XML (str). Raises Fault."""
        try:
            root = ET.fromstring(xml_bytes)
        except ET.ParseError as e:
            raise Fault(CODE_SCHEMA_INVALID, "w:SchemaValidationError", "malformed XML: %s" % e)
        header = root.find("s:Header", NS)
        body = root.find("s:Body", NS)
        if header is None or body is None:
            raise Fault(CODE_SCHEMA_INVALID, "w:SchemaValidationError", "not a SOAP envelope")
        action = text_of(header.find("wsa:Action", NS)).strip()
        ctx["message_id"] = text_of(header.find("wsa:MessageID", NS)).strip()
        name = ACTIONS.get(action)
        entry["action"] = name or action
        entry["resource_uri"] = text_of(header.find("wsman:ResourceURI", NS)).strip()
        shell_id = selector_shell_id(header)
        entry["shell_id"] = shell_id
        if name is None:
            raise Fault(
                CODE_ACTION_NOT_SUPPORTED,
                "a:ActionNotSupported",
                "The WS-Management service cannot process the request because the action %s "
                "is not supported." % action,
            )
        timeout = iso_duration_seconds(text_of(header.find("wsman:OperationTimeout", NS)))
        mid = ctx["message_id"]
        if name == "Create":
            return self.create(header, body, ctx, entry, mid)
        with self.state.lock:
            shell = self.state.shells.get(shell_id or "")
        if shell is None:
            raise invalid_shell(shell_id or "")
        if name == "Delete":
            with self.state.lock:
                self.state.shells.pop(shell.id, None)
            return self.env(TRANSFER + "DeleteResponse", mid, "")
        if name == "Command":
            return self.command(shell, header, body, entry, mid)
        if name == "Send":
            return self.send(shell, body, entry, mid)
        if name == "Signal":
            sig = body.find("rsp:Signal", NS)
            cid = sig.get("CommandId") if sig is not None else None
            entry["command_id"] = cid
            entry["signal_code"] = text_of(sig.find("rsp:Code", NS)) if sig is not None else ""
            cmd = self.find_command(shell, cid)
            with self.state.lock:
                cmd.signals.append(entry["signal_code"])
                self.state.lock.notify_all()
            return self.env(SHELL + "SignalResponse", mid, "<rsp:SignalResponse/>")
        return self.receive(shell, body, entry, mid, timeout)

    def find_command(self, shell, cid):
        with self.state.lock:
            cmd = shell.commands.get(cid or "")
        if cmd is None:
            raise Fault(
                CODE_INVALID_SELECTORS,
                "w:InvalidSelectors",
                "The request for the Windows Remote Shell with ShellId %s failed because the "
                "command with CommandId %s was not found. " % (shell.id, cid),
            )
        return cmd

    def create(self, header, body, ctx, entry, mid):
        shell_el = body.find("rsp:Shell", NS)
        if shell_el is None:
            raise Fault(CODE_SCHEMA_INVALID, "w:SchemaValidationError", "Create without rsp:Shell")
        shell_id = new_id()
        owner = ctx.get("user") or self.args.username
        with self.state.lock:
            self.state.shells[shell_id] = Shell(shell_id, owner)
        entry["shell_id"] = shell_id
        entry["options"] = options(header)
        inputs = text_of(shell_el.find("rsp:InputStreams", NS)) or "stdin"
        outputs = text_of(shell_el.find("rsp:OutputStreams", NS)) or "stdout stderr"
        resource = entry.get("resource_uri") or CMD_URI
        address = text_of(header.find("wsa:To", NS)).strip() or ctx["url"]
        xml = (
            "<x:ResourceCreated><a:Address>%s</a:Address><a:ReferenceParameters>"
            "<w:ResourceURI>%s</w:ResourceURI><w:SelectorSet>"
            '<w:Selector Name="ShellId">%s</w:Selector></w:SelectorSet></a:ReferenceParameters>'
            "</x:ResourceCreated>"
            '<rsp:Shell xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell">'
            "<rsp:ShellId>%s</rsp:ShellId><rsp:ResourceUri>%s</rsp:ResourceUri>"
            "<rsp:Owner>%s</rsp:Owner><rsp:ClientIP>%s</rsp:ClientIP>"
            "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
            "<rsp:InputStreams>%s</rsp:InputStreams><rsp:OutputStreams>%s</rsp:OutputStreams>"
            "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
            "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>"
            % (
                escape(address),
                escape(resource),
                shell_id,
                shell_id,
                escape(resource),
                escape(owner),
                escape(ctx["client_ip"]),
                escape(inputs),
                escape(outputs),
            )
        )
        return self.env(TRANSFER + "CreateResponse", mid, xml)

    def command(self, shell, header, body, entry, mid):
        cl = body.find("rsp:CommandLine", NS)
        if cl is None:
            raise Fault(CODE_SCHEMA_INVALID, "w:SchemaValidationError", "Command without CommandLine")
        command = text_of(cl.find("rsp:Command", NS)).strip()
        arguments = [text_of(a) for a in cl.findall("rsp:Arguments", NS)]
        opts = options(header)
        entry["options"] = opts
        skip_cmd = opts.get("WINRS_SKIP_CMD_SHELL", "").strip().lower() == "true"
        line, script, source, reads_stdin = decode_command_line(command, arguments)
        cmd = Command(new_id(), line, script, source, reads_stdin, skip_cmd)
        entry.update(
            command_id=cmd.id,
            command_line=line,
            command_line_chars=len(line),
            script=script,
            script_source=source,
        )
        if script is not None and not reads_stdin:
            self.prepare(cmd, entry)
        with self.state.lock:
            shell.commands[cmd.id] = cmd
        xml = "<rsp:CommandResponse><rsp:CommandId>%s</rsp:CommandId></rsp:CommandResponse>" % cmd.id
        return self.env(SHELL + "CommandResponse", mid, xml)

    def prepare(self, cmd, entry):
        """Chooses the canned reply once the script is known."""
        scenario = load_scenario(self.args.scenario)
        if not cmd.skip_cmd and len(cmd.line) > CMD_LINE_LIMIT:
            reply = merged({"stderr": "The command line is too long.\r\n", "exit_code": 1})
            cmd.rule = "command-line-too-long"
        else:
            cmd.rule, reply = resolve_reply(scenario, cmd.script or "")
        cmd.reply = reply
        cmd.steps = build_steps(reply)
        entry["rule"] = cmd.rule

    def send(self, shell, body, entry, mid):
        send = body.find("rsp:Send", NS)
        streams = send.findall("rsp:Stream", NS) if send is not None else []
        total = 0
        for st in streams:
            cid = st.get("CommandId")
            entry["command_id"] = cid
            cmd = self.find_command(shell, cid)
            try:
                data = base64.b64decode(st.text or "", validate=True)
            except binascii.Error:
                raise Fault(CODE_SCHEMA_INVALID, "w:SchemaValidationError", "stdin is not base64")
            total += len(data)
            with self.state.lock:
                cmd.stdin += data
                if (st.get("End") or "").lower() == "true" and not cmd.stdin_done:
                    text = cmd.stdin.decode("utf-8", errors="replace").lstrip("\ufeff")
                    if cmd.script is not None:
                        entry["bootstrap"] = cmd.script
                    cmd.script = text
                    entry["script"] = text
                    entry["script_source"] = "stdin"
                    self.prepare(cmd, entry)
                    cmd.stdin_done = True
                self.state.lock.notify_all()
        entry["stdin_bytes"] = total
        return self.env(SHELL + "SendResponse", mid, "<rsp:SendResponse/>")

    def receive(self, shell, body, entry, mid, op_timeout):
        recv = body.find("rsp:Receive", NS)
        desired = recv.find("rsp:DesiredStream", NS) if recv is not None else None
        cid = desired.get("CommandId") if desired is not None else None
        entry["command_id"] = cid
        cmd = self.find_command(shell, cid)
        with self.state.lock:
            if not cmd.stdin_done:
                # Like PowerShell waiting on stdin: nothing until the input ends.
                self.state.lock.wait_for(lambda: cmd.stdin_done, timeout=min(op_timeout, 1.0))
                if not cmd.stdin_done:
                    entry["step"] = "timeout"
                    raise timed_out()
            reply = cmd.reply
            index = cmd.step
            cmd.step += 1
        if reply.get("hang"):
            entry["step"] = "hang"
            self.state.log(dict(entry, status=None, note="hanging until the server stops"))
            self.state.stopping.wait()
            raise timed_out()
        if index < len(cmd.steps):
            step = cmd.steps[index]
        else:
            step = ([], True)
        if step == "timeout":
            entry["step"] = "timeout"
            wait = min(op_timeout, reply["timeout_wait_ms"] / 1000.0)
            time.sleep(max(0.0, wait))
            raise timed_out()
        parts, done = step
        if index == int(reply.get("timeouts") or 0) and reply.get("delay_ms"):
            time.sleep(reply["delay_ms"] / 1000.0)
        entry["step"] = "done" if done else "running"
        entry["chunks"] = len(parts)
        xml = ["<rsp:ReceiveResponse>"]
        for stream, data in parts:
            xml.append(
                '<rsp:Stream Name="%s" CommandId="%s">%s</rsp:Stream>'
                % (stream, cmd.id, base64.b64encode(data).decode("ascii"))
            )
        if done:
            for stream in ("stdout", "stderr"):
                xml.append('<rsp:Stream Name="%s" CommandId="%s" End="true"></rsp:Stream>' % (stream, cmd.id))
            xml.append(
                '<rsp:CommandState CommandId="%s" State="%s"><rsp:ExitCode>%d</rsp:ExitCode>'
                "</rsp:CommandState>" % (cmd.id, STATE_DONE, int(reply["exit_code"]))
            )
        else:
            xml.append(
                '<rsp:CommandState CommandId="%s" State="%s"></rsp:CommandState>' % (cmd.id, STATE_RUNNING)
            )
        xml.append("</rsp:ReceiveResponse>")
        return self.env(SHELL + "ReceiveResponse", mid, "".join(xml))


# --------------------------------------------------------------------------------------------
# HTTP, auth and message encryption.


def parse_encrypted(body):
    """(header, sealed data, expected length) from a multipart/encrypted body (MS-WSMV 2.2.9.1)."""
    m = re.match(
        rb"--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        rb"\tOriginalContent: type=application/soap\+xml;charset=UTF-8;Length=(\d+)\r\n"
        rb"--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n(.*)"
        rb"--Encrypted Boundary--\r\n$",
        body,
        re.DOTALL,
    )
    if not m:
        raise ValueError("not a multipart/encrypted WinRM body")
    length = int(m.group(1))
    payload = m.group(2)
    if len(payload) >= 4:
        sig_len = struct.unpack("<I", payload[:4])[0]
        header = payload[4 : 4 + sig_len]
        data = payload[4 + sig_len :]
        # In MIME the CRLF before a boundary belongs to the boundary: some clients send one
        # (winrm-rs), others not (pywinrm, and Windows in its answers). NTLM sealing keeps the
        # length, so the sealed data is exactly `length` bytes.
        if len(data) == length + 2 and data.endswith(b"\r\n"):
            data = data[:-2]
        return header, data, length
    raise ValueError("truncated encrypted payload")


def build_encrypted(ctx, plaintext):
    wrapped = ctx.wrap_winrm(plaintext)
    return (
        BOUNDARY + b"\r\n"
        b"\tContent-Type: " + SPNEGO_ENC.encode() + b"\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
        + str(len(plaintext)).encode()
        + b"\r\n" + BOUNDARY + b"\r\n"
        b"\tContent-Type: application/octet-stream\r\n"
        + struct.pack("<I", len(wrapped.header))
        + wrapped.header
        + wrapped.data
        + BOUNDARY + b"--\r\n"
    )


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def setup(self):
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + the peer's delayed ACK
        # add ~40 ms to every response (HTTP.sys does not have that stall).
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.conn_id = next(self.server.state.conn_seq)
        self.ntlm = None  # pyspnego acceptor context of this connection
        self.ntlm_user = None  # set once the handshake completed

    def log_message(self, format, *args):  # quiet: the JSON log is the record
        pass

    def version_string(self):
        return self.server_version

    def send(self, status, body=b"", content_type=None, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self):
        self.read_body()
        self.send(405, headers=[("Allow", "POST")])

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_POST(self):
        state = self.server.state
        args = state.args
        body = self.read_body()
        entry = {
            "conn": self.conn_id,
            "client": "%s:%d" % self.client_address[:2],
            "path": self.path,
            "tls": args.tls,
            "auth": None,
            "user": None,
            "encrypted": False,
            "action": None,
        }
        if args.tarpit_now():
            entry["note"] = "tarpit: never answered"
            state.log(dict(entry, status=None))
            state.stopping.wait()
            return
        # Servers must accept the absolute form too (RFC 9112 3.2.2), as HTTP.sys does.
        path = urllib.parse.urlsplit(self.path).path if "://" in self.path else self.path
        if path.split("?")[0].rstrip("/").lower() != "/wsman":
            state.log(dict(entry, status=404))
            self.send(404)
            return
        if args.auth == "basic":
            plaintext = self.auth_basic(body, entry)
        else:
            plaintext = self.auth_ntlm(body, entry)
        if plaintext is None:
            return  # already answered (401 / handshake / error)
        ctx = {
            "user": entry["user"],
            "client_ip": self.client_address[0],
            "url": "%s://%s:%d/wsman" % ("https" if args.tls else "http", args.bind, self.server.server_port),
        }
        try:
            activity_id = bool(load_scenario(args.scenario).get("activity_id"))
        except (OSError, ValueError):
            activity_id = False
        try:
            xml = WsMan(state, activity_id).handle(plaintext, ctx, entry)
            status = 200
        except Fault as fault:
            xml = fault_envelope(fault, ctx.get("message_id"), args.bind, activity_id)
            status = 500
            entry["fault_code"] = fault.code
            entry["fault_subcode"] = fault.subcode
        out = xml.encode("utf-8")
        entry["status"] = status
        state.log(entry)
        if entry["encrypted"]:
            self.send(status, build_encrypted(self.ntlm, out), ENCRYPTED_CT)
        else:
            self.send(status, out, SOAP_CT)

    # -- Basic ------------------------------------------------------------------------------

    def auth_basic(self, body, entry):
        state = self.server.state
        args = state.args
        entry["auth"] = "basic"
        challenge = [("WWW-Authenticate", 'Basic realm="WSMAN"')]
        value = self.headers.get("Authorization") or ""
        ok = False
        if value[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(value[6:].strip()).decode("utf-8").partition(":")
                entry["user"] = user
                ok = user.lower() == args.username.lower() and password == args.password
            except (binascii.Error, UnicodeDecodeError):
                ok = False
        if ok and not args.tls and not args.allow_unencrypted:
            entry["note"] = "Basic over HTTP refused (AllowUnencrypted=false)"
            ok = False
        if not ok:
            state.log(dict(entry, status=401))
            self.send(401, headers=challenge)
            return None
        return self.check_soap_content_type(body, entry)

    def check_soap_content_type(self, body, entry):
        ct = (self.headers.get("Content-Type") or "").lower().replace(" ", "")
        if not ct.startswith("application/soap+xml"):
            self.server.state.log(dict(entry, status=415))
            self.send(415)
            return None
        return body

    # -- NTLM (Negotiate) with message encryption --------------------------------------------

    def auth_ntlm(self, body, entry):
        import spnego
        import spnego.exceptions

        state = self.server.state
        args = state.args
        entry["auth"] = "ntlm"
        challenge = [("WWW-Authenticate", "Negotiate")]
        value = self.headers.get("Authorization") or ""
        scheme, _, token_b64 = value.partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and token_b64.strip():
            try:
                token = base64.b64decode(token_b64.strip())
            except binascii.Error:
                token = b""
            if token.startswith(b"NTLMSSP\x00\x01"):
                self.ntlm = spnego.server(protocol="ntlm", **self.channel_bindings())
                self.ntlm_user = None
            if self.ntlm is None:
                state.log(dict(entry, status=401, note="no NTLM negotiate on this connection"))
                self.send(401, headers=challenge)
                return None
            try:
                out = self.ntlm.step(token)
            except spnego.exceptions.SpnegoError as e:
                self.ntlm = None
                state.log(dict(entry, status=401, note="NTLM rejected: %s" % type(e).__name__))
                self.send(401, headers=challenge)
                return None
            if not self.ntlm.complete:
                state.log(dict(entry, status=401, note="NTLM challenge"))
                self.send(
                    401,
                    headers=[("WWW-Authenticate", "%s %s" % (scheme, base64.b64encode(out or b"").decode()))],
                )
                return None
            self.ntlm_user = self.ntlm.client_principal or "?"
            entry["user"] = self.ntlm_user
            if not body:
                state.log(dict(entry, status=200, note="NTLM authenticated, empty body"))
                self.send(200)
                return None
            if not self.is_encrypted() and not args.tls and not args.allow_unencrypted:
                # A plaintext body riding on the NTLM authenticate message: Windows keeps
                # answering 401 (AllowUnencrypted=false).
                self.ntlm = None
                self.ntlm_user = None
                state.log(dict(entry, status=401, note="plaintext body with NTLM authenticate refused"))
                self.send(401, headers=challenge)
                return None
        if self.ntlm_user is None:
            state.log(dict(entry, status=401))
            self.send(401, headers=challenge)
            return None
        entry["user"] = self.ntlm_user
        if self.is_encrypted():
            try:
                header, data, length = parse_encrypted(body)
                plaintext = self.ntlm.unwrap_winrm(header, data)
            except (ValueError, spnego.exceptions.SpnegoError) as e:
                state.log(dict(entry, status=400, note="cannot decrypt: %s" % type(e).__name__))
                self.send(400)
                return None
            if len(plaintext) != length:
                state.log(dict(entry, status=400, note="decrypted length mismatch"))
                self.send(400)
                return None
            entry["encrypted"] = True
            return plaintext
        if not args.tls and not args.allow_unencrypted:
            state.log(dict(entry, status=500, note="unencrypted body refused (AllowUnencrypted=false)"))
            self.send(500)
            return None
        return self.check_soap_content_type(body, entry)

    def is_encrypted(self):
        ct = (self.headers.get("Content-Type") or "").lower()
        return ct.startswith("multipart/encrypted") and SPNEGO_ENC.lower() in ct

    def channel_bindings(self):
        if not self.server.state.args.tls:
            return {}
        from spnego.channel_bindings import GssChannelBindings

        digest = hashlib.sha256(self.server.cert_der).digest()
        return {"channel_bindings": GssChannelBindings(application_data=b"tls-server-end-point:" + digest)}


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, state, ssl_context, cert_der):
        self.state = state
        self.ssl_context = ssl_context
        self.cert_der = cert_der
        super().__init__((state.args.bind, state.args.port), Handler)

    def finish_request(self, request, client_address):
        # TLS handshake in the connection's own thread, so a silent client blocks nobody.
        if self.ssl_context is not None:
            request.settimeout(30)
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
            request.settimeout(None)
        super().finish_request(request, client_address)


# --------------------------------------------------------------------------------------------
# Certificates.


def make_certs(state_dir, bind):
    """A test CA and a server certificate for 127.0.0.1/localhost signed by it (RSA 2048)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "luumen WinRM test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    if bind != "127.0.0.1":
        sans.append(x509.IPAddress(ipaddress.ip_address(bind)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, bind)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca_file": os.path.join(state_dir, "ca.pem"),
        "cert_file": os.path.join(state_dir, "server.pem"),
        "key_file": os.path.join(state_dir, "server.key"),
    }
    with open(paths["ca_file"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert_file"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(paths["key_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    der = cert.public_bytes(serialization.Encoding.DER)
    return paths, der


# --------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--state-dir", required=True)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--auth", choices=["basic", "ntlm"], required=True)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--username", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--allow-unencrypted", action="store_true")
    p.add_argument("--scenario", required=True)
    args = p.parse_args(argv)
    if not ipaddress.ip_address(args.bind).is_loopback:
        p.error("--bind must be a loopback address")
    with open(args.password_file, encoding="utf-8") as f:
        args.password = f.read().rstrip("\r\n")

    def tarpit_now():
        try:
            return bool(load_scenario(args.scenario).get("tarpit"))
        except (OSError, ValueError):
            return False

    args.tarpit_now = tarpit_now
    os.makedirs(args.state_dir, exist_ok=True)
    # pyspnego's NTLM acceptor reads its accounts from NTLM_USER_FILE (DOMAIN:USER:PASSWORD).
    user_file = os.path.join(args.state_dir, "ntlm-users")
    fd = os.open(user_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(":%s:%s\n" % (args.username, args.password))
    os.environ["NTLM_USER_FILE"] = user_file

    ready = {"pid": os.getpid(), "cert_file": None, "ca_file": None, "cert_sha256": None}
    ssl_context = None
    cert_der = b""
    if args.tls:
        paths, cert_der = make_certs(args.state_dir, args.bind)
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(paths["cert_file"], paths["key_file"])
        ready.update(
            cert_file=paths["cert_file"],
            ca_file=paths["ca_file"],
            cert_sha256=hashlib.sha256(cert_der).hexdigest(),
        )
    state = State(args)
    server = Server(state, ssl_context, cert_der)
    port = server.server_port
    ready["port"] = port
    ready["url"] = "%s://%s:%d/wsman" % ("https" if args.tls else "http", args.bind, port)
    tmp = os.path.join(args.state_dir, "ready.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(ready, f)
    os.replace(tmp, os.path.join(args.state_dir, "ready.json"))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        state.stopping.set()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
