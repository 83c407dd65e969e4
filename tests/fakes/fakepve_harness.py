"""A fakepve (PyPI, AGPL-3.0-or-later) instance for opsqueue's tests.

fakepve is a test tool only: it runs as this separate process, installed
into a virtual environment by scripts/install-test-deps, and is never
vendored or linked into opsqueue.

Usage: python fakepve_harness.py SCENARIO.json

The scenario sets up the fake cluster: {"time_scale", "lock_wait", "tokens":
{"user@realm!id": "secret"}, "nodes": [...], "guests": [{"vmid", "type":
"qemu"|"lxc", "name", "status", "node", "lock", "config", "shutdown_secs",
"start_secs", "stop_secs", "start_error", "ha_state"}], "cert_dir"}. The
server listens on 127.0.0.1 on a port the system picks, with a self-signed
certificate written to cert_dir; then one line goes to stdout:

    ready https://127.0.0.1:PORT CERT_PATH

Then commands arrive on stdin, one JSON object a line, each answered with
one JSON line on stdout ({"ok": true, ...} or {"ok": false, "error": ...}):

    {"cmd": "migrate", "vmid": 100, "target": "pve2", "secs": 200}
    {"cmd": "fail", "method": "POST", "suffix": "/status/start", "status": 500, "message": "boom", "times": 2}
    {"cmd": "node_offline", "node": "pve1", "offline": true}
    {"cmd": "guest", "vmid": 100}
    {"cmd": "requests"}
    {"cmd": "hold_migrations"}
    {"cmd": "release_migrations"}

"requests" answers every request fakepve received, oldest first, as
{"method", "path", "params"}: params are the form parameters of the body
(what opsqueue's client POSTs), secrets redacted by fakepve.

"hold_migrations" makes every container migration that starts from then on
wait at its move step (the container already shut down, locked "migrate",
its task running) until "release_migrations": a migration that lasts as
long as the test needs, however slow the machine.

The process exits when stdin closes, so it never outlives its test.
"""

import asyncio
import json
import sys
import urllib.parse

from fakepve import FakePve
from fakepve.certs import make_cert


def setup(scenario):
    pve = FakePve(user='root@pam', password='not-used-by-opsqueue', host='127.0.0.1', port=0)
    pve.time_scale = scenario.get('time_scale', 0.01)
    if 'lock_wait' in scenario:
        pve.lock_wait = scenario['lock_wait']
    for node in scenario.get('nodes', []):
        pve.add_node(node)
    for tokenid, secret in scenario.get('tokens', {}).items():
        pve.apitokens[tokenid] = secret
    for spec in scenario.get('guests', []):
        common = dict(node=spec.get('node', 'pve1'), status=spec.get('status', 'stopped'),
                      config=spec.get('config', {}), lock=spec.get('lock'))
        if spec.get('type', 'qemu') == 'lxc':
            guest = pve.add_ct(spec['vmid'], spec.get('name'), **common)
        else:
            guest = pve.add_vm(spec['vmid'], spec.get('name') or 'vm{0}'.format(spec['vmid']), **common)
        for key in ('shutdown_secs', 'start_secs', 'stop_secs', 'start_error', 'ha_state'):
            if key in spec:
                setattr(guest, key, spec[key])
    return pve


# fakepve's container migration pauses ct_secs['migrate'] PVE seconds at its
# move step; while migrations are held, that value is this marker and the
# pause waits for the gate instead.
HELD = 'held by the test'


class MigrationGate:
    def __init__(self, pve):
        self.pve = pve
        self.open = asyncio.Event()
        plain_pause = pve.pause

        async def pause(secs):
            if secs == HELD:
                await self.open.wait()
            else:
                await plain_pause(secs)
        pve.pause = pause

    def hold(self):
        self.open.clear()
        self.pve.ct_secs['migrate'] = HELD

    def release(self):
        self.pve.ct_secs['migrate'] = 0
        self.open.set()


def recorded(method, path, body):
    params = urllib.parse.parse_qsl(body.decode('utf-8', 'replace'), keep_blank_values=True)
    return {'method': method, 'path': path, 'params': dict(params)}


async def answer(pve, gate, command):
    cmd = command.get('cmd')
    if cmd == 'migrate':
        upid = await pve.migrate(command['vmid'], command['target'], secs=command.get('secs', 20))
        return {'upid': upid}
    if cmd == 'fail':
        pve.fail(command['method'], command['suffix'], status=command['status'],
                 message=command['message'], times=command.get('times'))
        return {}
    if cmd == 'node_offline':
        pve.set_node_offline(command['node'], command.get('offline', True))
        return {}
    if cmd == 'guest':
        guest = pve.guest(command['vmid'])
        if guest is None:
            return {'guest': None}
        return {'guest': {'node': guest.node, 'status': guest.status, 'lock': guest.lock,
                          'qmpstatus': getattr(guest, 'qmpstatus', None)}}
    if cmd == 'requests':
        return {'requests': [recorded(*request) for request in pve.requests]}
    if cmd == 'hold_migrations':
        gate.hold()
        return {}
    if cmd == 'release_migrations':
        gate.release()
        return {}
    raise ValueError('unknown command {0!r}'.format(cmd))


async def main():
    with open(sys.argv[1]) as fh:
        scenario = json.load(fh)
    pve = setup(scenario)
    gate = MigrationGate(pve)
    cert, key, _ = make_cert(scenario['cert_dir'], hosts=('127.0.0.1',))
    await pve.start(cert, key)
    print('ready', pve.url, cert, flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        try:
            reply = await answer(pve, gate, json.loads(line))
            reply['ok'] = True
        except Exception as e:  # noqa: BLE001 - every failure goes back to the test
            reply = {'ok': False, 'error': '{0}: {1}'.format(type(e).__name__, e)}
        print(json.dumps(reply), flush=True)
    await pve.stop()


if __name__ == '__main__':
    asyncio.run(main())
