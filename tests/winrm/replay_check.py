#!/usr/bin/env python3
"""Replays the requests of real Windows WinRM recordings against the test server and compares
the shape of its responses with what Windows answered.

    replay_check.py --url URL --username U --scenario FILE RECORDING.yml...

The password comes from WINRM_PASSWORD; the server must accept Basic auth on URL. For each
recording the canned answers are derived from the recorded responses and written to the
server's scenario FILE (re-read on every Command); recorded ShellId/CommandId values in the
requests are replaced by the ones the server issued. Compared per message: the HTTP status and
the XML structure (namespace-qualified tags in order, attribute names, the values of Name, End,
State and the WSManFault Code attributes, the text of Action, ExitCode, fault codes, stream data
and resource URIs; ids, addresses and owners only as "present"). Prints a JSON report; exit
status 0 when every message matched.
"""

import argparse
import base64
import json
import os
import re
import sys
import uuid
import xml.etree.ElementTree as ET

import requests

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
WSA = {"s": NS["s"], "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing"}
KEEP_ATTRS = {"Name", "End", "State", "Code", "{http://www.w3.org/XML/1998/namespace}lang"}
KEEP_TEXT = {"Action", "ExitCode", "Value", "Stream", "ResourceURI", "ResourceUri", "InputStreams",
             "OutputStreams", "IdleTimeOut", "ShellRunTime", "ShellInactivity", "Text", "Message", "To"}


def local(tag):
    return tag.rsplit("}", 1)[-1]


def shape(elem):
    attrs = tuple(sorted(
        (k, v if k in KEEP_ATTRS else "*") for k, v in elem.attrib.items()
    ))
    text = (elem.text or "").strip()
    if text and local(elem.tag) not in KEEP_TEXT:
        text = "*"
    return (elem.tag, attrs, text, tuple(shape(c) for c in elem))


def diff(a, b, path=""):
    """First difference between two shapes, as text (None when equal)."""
    tag_a, attrs_a, text_a, kids_a = a
    tag_b, attrs_b, text_b, kids_b = b
    here = "%s/%s" % (path, local(tag_a))
    if tag_a != tag_b:
        return "%s: element %s vs %s" % (path, tag_a, tag_b)
    if attrs_a != attrs_b:
        return "%s: attributes %s vs %s" % (here, attrs_a, attrs_b)
    if text_a != text_b:
        return "%s: text %r vs %r" % (here, text_a[:80], text_b[:80])
    if len(kids_a) != len(kids_b):
        return "%s: %d children %s vs %d children %s" % (
            here, len(kids_a), [local(k[0]) for k in kids_a], len(kids_b), [local(k[0]) for k in kids_b])
    for x, y in zip(kids_a, kids_b):
        d = diff(x, y, here)
        if d:
            return d
    return None


def load_recording(path):
    messages = []
    for line in open(path, encoding="utf-8"):
        if line.startswith("- request: "):
            messages.append({"request": line[len("- request: "):].rstrip("\n"), "status": 200})
        elif line.startswith("  response: "):
            messages[-1]["response"] = line[len("  response: "):].rstrip("\n")
        elif line.strip().startswith("code: "):
            messages[-1]["status"] = int(line.split(":")[1])
    return messages


def derive_scenario(messages):
    """Canned replies equal to what Windows answered: one rule per command line."""
    rules = []
    current = None
    for m in messages:
        req = ET.fromstring(m["request"])
        resp = ET.fromstring(m["response"])
        action = req.find("s:Header/wsa:Action", WSA).text.strip().rsplit("/", 1)[-1]
        if action == "Command":
            cl = req.find("s:Body/rsp:CommandLine", NS)
            line = " ".join([cl.find("rsp:Command", NS).text.strip()] +
                            [a.text or "" for a in cl.findall("rsp:Arguments", NS)]).strip()
            current = {"contains": line, "receives": []}
            rules.append(current)
        elif action == "Receive" and current is not None:
            if resp.find("s:Body/s:Fault", NS) is not None:
                current["receives"].append("timeout")
                continue
            item = {"stdout_base64": [], "stderr_base64": []}
            for st in resp.iter("{%s}Stream" % NS["rsp"]):
                if st.text:
                    item[st.get("Name") + "_base64"].append(st.text)
            state = resp.find(".//rsp:CommandState", NS)
            item["done"] = state.get("State").endswith("/Done")
            code = state.find("rsp:ExitCode", NS)
            if code is not None:
                current["exit_code"] = int(code.text)
            current["receives"].append(item)
    # Longest command lines first, so "echo abc" is not taken by a rule for "echo".
    rules.sort(key=lambda r: -len(r["contains"]))
    activity = any("ActivityId>" in m["response"] for m in messages)
    return {"rules": rules, "default": {"stdout": "", "exit_code": 0}, "activity_id": activity}


def replay(url, auth, scenario_file, path):
    messages = load_recording(path)
    with open(scenario_file, "w", encoding="utf-8") as f:
        json.dump(derive_scenario(messages), f)
    ids = {}
    report = {"file": os.path.basename(path), "messages": len(messages), "mismatches": []}
    session = requests.Session()
    for i, m in enumerate(messages):
        body = m["request"]
        for old, new in ids.items():
            body = body.replace(old, new)
        r = session.post(url, data=body.encode("utf-8"), auth=auth,
                         headers={"Content-Type": "application/soap+xml;charset=UTF-8"}, timeout=30)
        if r.status_code != m["status"]:
            report["mismatches"].append("message %d: HTTP %d vs recorded %d" % (i, r.status_code, m["status"]))
            continue
        mine = ET.fromstring(r.content)
        theirs = ET.fromstring(m["response"])
        # Learn the ids the server issued for the recorded ones.
        for tag in ("ShellId", "CommandId"):
            a = theirs.find(".//rsp:%s" % tag, NS)
            b = mine.find(".//rsp:%s" % tag, NS)
            if a is not None and b is not None:
                ids[a.text.strip()] = b.text.strip()
        sel = mine.find(".//w:Selector[@Name='ShellId']", NS)
        shell_el = mine.find(".//rsp:ShellId", NS)
        if (sel is None) != (shell_el is None) or (sel is not None and sel.text != shell_el.text):
            report["mismatches"].append("message %d: ShellId selector and rsp:ShellId differ" % i)
        d = diff(shape(mine.find("s:Header", NS)), shape(theirs.find("s:Header", NS)))
        d = d or diff(shape(mine.find("s:Body", NS)), shape(theirs.find("s:Body", NS)))
        if d:
            report["mismatches"].append("message %d: %s" % (i, d))
    return report


def unknown_shell(url, auth):
    """A Receive for a shell that does not exist: HTTP 500, w:InvalidSelectors, 2150858843."""
    bogus = str(uuid.uuid4()).upper()
    body = (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
        'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><s:Header>'
        '<wsa:Action s:mustUnderstand="true">http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive</wsa:Action>'
        '<wsa:MessageID>uuid:%s</wsa:MessageID>'
        '<wsman:ResourceURI s:mustUnderstand="true">http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</wsman:ResourceURI>'
        '<wsman:SelectorSet><wsman:Selector Name="ShellId">%s</wsman:Selector></wsman:SelectorSet>'
        '</s:Header><s:Body><rsp:Receive><rsp:DesiredStream CommandId="%s">stdout stderr</rsp:DesiredStream>'
        '</rsp:Receive></s:Body></s:Envelope>' % (uuid.uuid4(), bogus, bogus))
    r = requests.post(url, data=body.encode(), auth=auth,
                      headers={"Content-Type": "application/soap+xml;charset=UTF-8"}, timeout=30)
    out = {"status": r.status_code}
    try:
        root = ET.fromstring(r.content)
        out["subcode"] = root.find(".//s:Subcode/s:Value", NS).text
        out["code"] = int(root.find(".//f:WSManFault", NS).get("Code"))
        out["action"] = root.find("s:Header/{http://schemas.xmlsoap.org/ws/2004/08/addressing}Action", NS).text
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("recordings", nargs="+")
    args = p.parse_args()
    auth = (args.username, os.environ.get("WINRM_PASSWORD", ""))
    reports = [replay(args.url, auth, args.scenario, path) for path in args.recordings]
    result = {
        "recordings": reports,
        "messages": sum(r["messages"] for r in reports),
        "mismatches": sum(len(r["mismatches"]) for r in reports),
        "unknown_shell": unknown_shell(args.url, auth),
    }
    print(json.dumps(result, indent=1))
    return 0 if result["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
