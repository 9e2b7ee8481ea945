#!/usr/bin/env python3
"""Upgrade the dependency lock on purpose: try the newest versions, keep them if all holds.

    python3 scripts/upgrade_deps.py                # try, report, rewrite constraints.txt
    python3 scripts/upgrade_deps.py --dry-run      # try and report only
    python3 scripts/upgrade_deps.py --hold opencv-python-headless==5.0.0.93

In a scratch export of the committed HEAD (what a fresh clone holds) it runs
``INFMLLM_LOCK=<holds only> ./setup.sh``, so pip takes the newest versions that
requirements.txt admits, then the test suite (scripts/test.sh), the frame describer over
the sample bag (scripts/describer_digest.py) and the offline demo replay, each in the
scratch environment and, for the describer and the demo, in this checkout's locked .venv
too. It prints which packages moved and whether the suite, the describer's text and the
demo score held, writes the report to results/upgrade_deps.{json,md}, and rewrites
constraints.txt only when the suite passed and the demo score did not fall. torch stays
at setup.sh's TORCH_VERSION (the CPU wheel); moving it is a decision of its own.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / 'constraints.txt'
HELD_LINE = '# Held back on purpose:'
OPTIONAL_LINE = '# Optional:'


def log(msg: str) -> None:
    """Print a progress line at once (the steps take minutes)."""
    print(f'[upgrade] {msg}', flush=True)


def read_lock(path: Path) -> tuple[list[str], dict[str, str]]:
    """Return the lock's leading comment lines and its ``{name: version}`` pins."""
    header, pins = [], {}
    for line in path.read_text().splitlines():
        if line.startswith('#') and not pins:
            header.append(line)
        elif '==' in line:
            name, version = line.split('#', 1)[0].strip().split('==', 1)
            pins[name] = version
    return header, pins


def canonical(name: str) -> str:
    """Return the PEP 503 name, so that ``PyYAML`` and ``pyyaml`` compare equal."""
    return re.sub(r'[-_.]+', '-', name).lower()


def copy_checkout(dest: Path) -> None:
    """Export the committed HEAD to ``dest`` (what a fresh clone holds, nothing local)."""
    archive = subprocess.run(['git', 'archive', '--format=tar', 'HEAD'], cwd=ROOT,
                             check=True, capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', str(dest)], input=archive, check=True)


def run(cmd: list[str] | str, cwd: Path, logfile: Path, env: dict | None = None) -> tuple:
    """Run ``cmd`` (a bash line when a str), output to ``logfile``; (exit code, seconds)."""
    if isinstance(cmd, str):
        cmd = ['bash', '-c', cmd]        # install/setup.bash needs bash, not sh
    t0 = time.monotonic()
    with logfile.open('w') as out:
        rc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            env=env).returncode
    return rc, round(time.monotonic() - t0, 1)


def in_env(env_root: Path, code: Path, command: str) -> str:
    """Return a bash line running ``command`` on ``code``'s sources in ``env_root``'s .venv.

    Both environments run the same sources (the exported HEAD), so only the installed
    versions differ between the locked and the upgraded run.
    """
    return (f'. {env_root}/.venv/bin/activate && set +u && . {env_root}/install/setup.bash '
            f'&& export PYTHONPATH={code} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 '
            f'&& {command}')


def freeze(checkout: Path) -> dict[str, str]:
    """Installed versions in ``checkout``'s .venv (local labels such as +cpu dropped)."""
    out = subprocess.run([str(checkout / '.venv/bin/python'), '-m', 'pip', 'freeze',
                          '--exclude-editable'], check=True, capture_output=True).stdout
    pins = {}
    for line in out.decode().splitlines():
        if '==' in line and not canonical(line).startswith('ros2-infmllm'):
            name, version = line.split('==', 1)
            pins[name] = version.split('+')[0]
    return pins


def moved(old: dict[str, str], new: dict[str, str]) -> dict[str, list]:
    """``{name: [old or None, new or None]}`` for every package whose pin changed."""
    old_c = {canonical(k): (k, v) for k, v in old.items()}
    new_c = {canonical(k): (k, v) for k, v in new.items()}
    out = {}
    for key in sorted(set(old_c) | set(new_c)):
        a, b = old_c.get(key, (None, None)), new_c.get(key, (None, None))
        if a[1] != b[1]:
            out[a[0] or b[0]] = [a[1], b[1]]
    return out


def optional_pins(old: dict[str, str], lock_text: str) -> dict[str, str]:
    """Pins of the lock's optional section (weights a documented command installs).

    setup.sh does not install them, so the scratch environment cannot upgrade them:
    they are carried over as they are.
    """
    section, out = False, {}
    for line in lock_text.splitlines():
        if line.startswith(OPTIONAL_LINE):
            section = True
        elif section and '==' in line:
            name = line.split('==', 1)[0].strip()
            out[name] = old[name]
    return out


def demo(env_root: Path, code: Path, work: Path, tag: str) -> dict:
    """Offline demo replay on ``env_root``'s own sample bag; its summary and answers."""
    out = work / f'demo_{tag}.json'
    rc, secs = run(in_env(env_root, code, f'python -m ros2_infmllm.eval replay --offline '
                                          f'--frame-rate 1.0 --bag {env_root}/data/sample_bag '
                                          f'--out {out}'),
                   code, work / f'demo_{tag}.log')
    if rc != 0:
        return {'rc': rc, 'seconds': secs}
    data = json.loads(out.read_text())
    return {'rc': 0, 'seconds': secs, 'accuracy': data['summary']['accuracy'],
            'by_tag': data['summary'].get('accuracy_by_tag'),
            'answers': {r['id']: r['answer'] for r in data['records']}}


def digest(env_root: Path, code: Path, work: Path, tag: str) -> dict:
    """Return the frame describer's digest over ``env_root``'s own sample bag."""
    logfile = work / f'describer_{tag}.log'
    rc, _ = run(in_env(env_root, code, f'python {code}/scripts/describer_digest.py '
                                       f'--bag {env_root}/data/sample_bag '
                                       f'--out {work}/describer_{tag}.txt'),
                code, logfile)
    lines = logfile.read_text().strip().splitlines()
    return json.loads(lines[-1]) if rc == 0 and lines else {'rc': rc}


def write_lock(header: list[str], pins: dict[str, str], holds: list[str],
               optional: dict[str, str] | None = None) -> None:
    """Rewrite constraints.txt: the header, the held packages named, sorted pins.

    ``optional`` pins (packages setup.sh does not install) follow under their own
    comment line, unchanged.
    """
    held = ', '.join(holds) if holds else '(none)'
    header = [f'{HELD_LINE} {held}' if h.startswith(HELD_LINE) else h for h in header]
    optional = optional or {}
    lines = header + _sorted_pins({k: v for k, v in pins.items() if k not in optional})
    if optional:
        lines += [f'{OPTIONAL_LINE} weights that setup.sh does not install; kept as they are',
                  *_sorted_pins(optional)]
    LOCK.write_text('\n'.join(lines) + '\n')


def _sorted_pins(pins: dict[str, str]) -> list[str]:
    return [f'{k}=={v}' for k, v in sorted(pins.items(), key=lambda kv: kv[0].lower())]


def markdown(report: dict) -> str:
    """Render the report as the Markdown a reviewer reads."""
    rows = [f"| {name} | {a or '-'} | {b or '-'} |" for name, (a, b) in report['moved'].items()]
    locked, newest = report['demo']['locked'], report['demo']['upgraded']
    return '\n'.join([
        f"# Dependency upgrade, {report['date']}", '',
        f"Command: `{report['command']}`", '',
        f"- packages moved: {len(rows)}; held back: {', '.join(report['holds']) or 'none'}",
        f"- test suite on the newest versions: {report['tests']['result']} "
        f"({report['tests']['seconds']} s)",
        f"- frame describer over the sample bag: "
        f"{'same text' if report['describer_same'] else 'TEXT CHANGED'} "
        f"({report['describer']['upgraded'].get('sha256', '?')[:12]})",
        f"- offline demo accuracy: locked {locked.get('accuracy')}, "
        f"newest {newest.get('accuracy')}; identical answers "
        f"{report['demo']['same_answers']}",
        f"- lock: {report['lock']}", '',
        '| package | locked | newest |', '|---|---|---|', *rows, ''])


def main(argv: list[str] | None = None) -> int:
    """Try the newest versions and report; exit 1 when something moved and did not hold."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--hold', action='append', default=[], metavar='NAME==VERSION',
                        help='keep a package at this version (repeatable)')
    parser.add_argument('--dry-run', action='store_true', help='never rewrite constraints.txt')
    parser.add_argument('--skip-tests', action='store_true',
                        help='skip the suite (then the lock is never rewritten)')
    parser.add_argument('--scratch', type=Path, help='scratch folder (default: a temp dir)')
    parser.add_argument('--keep', action='store_true', help='keep the scratch folder')
    parser.add_argument('--out', type=Path, default=ROOT / 'results')
    args = parser.parse_args(argv)
    if not (ROOT / '.venv/bin/python').exists():
        parser.error('no locked .venv in this checkout: run ./setup.sh first')
    for hold in args.hold:
        if not re.fullmatch(r'[A-Za-z0-9_.-]+==[^=\s]+', hold):
            parser.error(f'--hold takes NAME==VERSION, not {hold!r}')

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix='infmllm-upgrade-'))
    work = scratch / 'upgrade-logs'
    tree = scratch / 'checkout'
    tree.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    header, locked = read_lock(LOCK)
    report = {'date': time.strftime('%Y-%m-%d'), 'holds': args.hold,
              'command': ' '.join(['python3 scripts/upgrade_deps.py'] + (argv or sys.argv[1:]))}

    log(f'exporting HEAD to {tree}')
    copy_checkout(tree)
    holds_file = work / 'holds.txt'
    holds_file.write_text(''.join(h + '\n' for h in args.hold))
    env = dict(os.environ, INFMLLM_LOCK=str(holds_file) if args.hold else 'none')
    env.pop('PIP_CONSTRAINT', None)
    env.pop('VIRTUAL_ENV', None)
    log('setup.sh with the newest versions requirements.txt admits (a few minutes)')
    rc, secs = run(['./setup.sh'], tree, work / 'setup.log', env=env)
    if rc != 0:
        log(f'setup failed (exit {rc}); see {work}/setup.log')
        return 1
    optional = optional_pins(locked, LOCK.read_text())
    newest = dict(freeze(tree), **optional)
    report['moved'] = moved(locked, newest)
    for name, (a, b) in report['moved'].items():
        log(f'  {name}: {a or "-"} -> {b or "-"}')
    log(f"{len(report['moved'])} package(s) moved")

    if args.skip_tests:
        report['tests'] = {'result': 'skipped', 'seconds': 0}
    else:
        log('test suite on the newest versions (several minutes)')
        rc, secs = run(['scripts/test.sh', '-q'], tree, work / 'tests.log',
                       env=dict(env, INFMLLM_LOCK='none'))
        tail = (work / 'tests.log').read_text().strip().splitlines()[-1:]
        report['tests'] = {'result': 'passed' if rc == 0 else f'FAILED (exit {rc})',
                           'summary': tail[0] if tail else '', 'seconds': secs}
        log(f"tests: {report['tests']['result']}: {report['tests']['summary']}")

    log('frame describer and offline demo, locked and newest')
    report['describer'] = {'locked': digest(ROOT, tree, work, 'locked'),
                           'upgraded': digest(tree, tree, work, 'upgraded')}
    sums = [d.get('sha256') for d in report['describer'].values()]
    report['describer_same'] = sums[0] is not None and sums[0] == sums[1]
    a, b = demo(ROOT, tree, work, 'locked'), demo(tree, tree, work, 'upgraded')
    report['demo'] = {'locked': a, 'upgraded': b, 'same_answers': 'n/a'}
    if 'answers' in a and 'answers' in b:
        same = sum(a['answers'].get(k) == v for k, v in b['answers'].items())
        report['demo']['same_answers'] = f"{same}/{len(b['answers'])}"
    demo_held = b.get('rc') == 0 and (b.get('accuracy') or 0) >= (a.get('accuracy') or 0)
    log(f"describer text {'unchanged' if report['describer_same'] else 'CHANGED'}; demo "
        f"accuracy locked {a.get('accuracy')} newest {b.get('accuracy')} "
        f"(answers identical {report['demo']['same_answers']})")

    ok = report['tests']['result'] == 'passed' and demo_held
    if not report['moved']:
        report['lock'] = 'unchanged: nothing moved'
    elif not ok:
        report['lock'] = 'kept: the suite or the demo score did not hold'
    elif args.dry_run:
        report['lock'] = 'kept (--dry-run); would be rewritten'
    else:
        write_lock(header, newest, args.hold, optional)
        report['lock'] = 'rewritten with the newest versions'
    log(f"lock {report['lock']}")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'upgrade_deps.json').write_text(json.dumps(report, indent=1) + '\n')
    (args.out / 'upgrade_deps.md').write_text(markdown(report))
    log(f"report: {args.out / 'upgrade_deps.md'}")
    if not args.keep and not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok or not report['moved'] else 1


if __name__ == '__main__':
    sys.exit(main())
