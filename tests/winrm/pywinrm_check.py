#!/usr/bin/env python3
"""Runs one PowerShell script through pywinrm (an independent WinRM client) and prints JSON.

    pywinrm_check.py --url URL --auth basic|ntlm --username U [--ca-file F] [--insecure]
                     [--encryption auto|always|never] [--cmd | --stdin | --stdin-bootstrap] SCRIPT

The password comes from the environment variable WINRM_PASSWORD (never the command line).
Prints {"stdout": str, "stderr": str, "status_code": int} on success, or
{"error": "<exception class>", "message": str} with exit status 2 on failure.
"""

import argparse
import base64
import json
import os
import sys

import winrm
import winrm.exceptions


BOOTSTRAP = "$script = $input | Out-String; & ([scriptblock]::Create($script))"


def run_stdin(protocol, script, bootstrap):
    """The script sent through WinRS Send (rsp:Stream stdin) to `powershell.exe -Command -`, or
    to an encoded bootstrap that reads and runs it."""
    if bootstrap:
        encoded = base64.b64encode(BOOTSTRAP.encode("utf-16-le")).decode()
        arguments = ["-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]
    else:
        arguments = ["-NoProfile", "-NonInteractive", "-Command", "-"]
    shell = protocol.open_shell()
    try:
        command = protocol.run_command(shell, "powershell.exe", arguments)
        protocol.send_command_input(shell, command, script.encode("utf-8"), end=True)
        stdout, stderr, code = protocol.get_command_output(shell, command)
        protocol.cleanup_command(shell, command)
    finally:
        protocol.close_shell(shell)
    return winrm.Response((stdout, stderr, code))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--auth", choices=["basic", "ntlm"], required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--ca-file")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--encryption", default="auto", choices=["auto", "always", "never"])
    p.add_argument("--cmd", action="store_true", help="run SCRIPT with cmd instead of PowerShell")
    p.add_argument("--stdin", action="store_true", help="send SCRIPT on stdin to powershell -Command -")
    p.add_argument(
        "--stdin-bootstrap",
        action="store_true",
        help="send SCRIPT on stdin to an -EncodedCommand bootstrap that reads $input",
    )
    p.add_argument("--timeout", type=int, default=20)
    p.add_argument("script")
    args = p.parse_args()

    kwargs = {
        "auth": (args.username, os.environ.get("WINRM_PASSWORD", "")),
        "transport": args.auth,
        "message_encryption": args.encryption,
        "read_timeout_sec": args.timeout + 10,
        "operation_timeout_sec": args.timeout,
    }
    if args.insecure:
        kwargs["server_cert_validation"] = "ignore"
    elif args.ca_file:
        kwargs["ca_trust_path"] = args.ca_file
    session = winrm.Session(args.url, **kwargs)
    try:
        if args.stdin or args.stdin_bootstrap:
            result = run_stdin(session.protocol, args.script, args.stdin_bootstrap)
        elif args.cmd:
            result = session.run_cmd(args.script)
        else:
            result = session.run_ps(args.script)
    except Exception as e:  # report any client failure as data for the Rust test
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        return 2
    print(
        json.dumps(
            {
                "stdout": result.std_out.decode("utf-8", errors="replace"),
                "stderr": result.std_err.decode("utf-8", errors="replace"),
                "status_code": result.status_code,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
