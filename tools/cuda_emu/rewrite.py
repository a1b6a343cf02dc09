#!/usr/bin/env python3
"""tools/cuda_emu/rewrite.py SRC DST — CUDA EMULATION: copies a .cu/.cuh file with every kernel launch
   NAME<<<grid, block[, smem[, stream]]>>>(args)
rewritten into the plain C++ call
   ::kdet_emu::launch("NAME", grid, block, smem, stream, NAME, args)
(tools/cuda_emu/include/cuda_runtime.h). NAME may be qualified and carry template arguments
(unary_kernel<T, R, F>). A `#line` directive keeps compiler messages pointing at the real source.
The real sources are never modified. Not handled (none in kdet): `<<<` inside a comment or string, and a
launch configuration holding a bare `<` or `>` comparison."""
import re
import sys


def match_back(s, i):
    """s[i] == '>': index of the '<' that opens it (nested <...> and (...) skipped)."""
    depth = 0
    while i >= 0:
        c = s[i]
        if c in '>)]':
            depth += 1
        elif c in '<([':
            depth -= 1
            if depth == 0:
                return i
        i -= 1
    raise SystemExit("rewrite.py: unbalanced template arguments before a launch")


def name_start(s, end):
    """Start of the kernel name expression that ends just before s[end] (whitespace skipped)."""
    i = end - 1
    while i >= 0 and s[i].isspace():
        i -= 1
    while True:
        if s[i] == '>':
            i = match_back(s, i) - 1
            while i >= 0 and s[i].isspace():
                i -= 1
        j = i
        while j >= 0 and (s[j].isalnum() or s[j] == '_'):
            j -= 1
        if j == i:
            raise SystemExit("rewrite.py: no kernel name before <<<")
        i = j
        if i >= 1 and s[i - 1:i + 1] == '::':
            i -= 2
            continue
        return i + 1


def match_paren(s, i):
    """s[i] == '(' (after whitespace): index just past its ')'."""
    depth = 0
    while i < len(s):
        if s[i] == '(':
            depth += 1
        elif s[i] == ')':
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise SystemExit("rewrite.py: unbalanced launch arguments")


def split_top(s):
    """Splits a launch configuration at its top-level commas."""
    parts, depth, cur = [], 0, ''
    for c in s:
        if c in '([{<':
            depth += 1
        elif c in ')]}>':
            depth -= 1
        if c == ',' and depth == 0:
            parts.append(cur)
            cur = ''
        else:
            cur += c
    parts.append(cur)
    return [p.strip() for p in parts]


def rewrite(s):
    out, pos, n = [], 0, 0
    while True:
        k = s.find('<<<', pos)
        if k < 0:
            break
        start = name_start(s, k)
        close = s.find('>>>', k)
        cfg = split_top(s[k + 3:close])
        if not 2 <= len(cfg) <= 4:
            raise SystemExit("rewrite.py: launch configuration <<<%s>>> not understood" % s[k + 3:close])
        cfg += ['0', 'nullptr'][len(cfg) - 2:]
        a = close + 3
        while s[a].isspace():
            a += 1
        end = match_paren(s, a)
        args = s[a + 1:end - 1].strip()
        name = s[start:k].strip()
        call = '::kdet_emu::launch("%s", %s, %s%s)' % (
            re.sub(r'\s+', ' ', name), ', '.join(cfg), name, (', ' + args) if args else '')
        # keep the line count: the call spans as many lines as the original launch did
        call += '\n' * (s[start:end].count('\n') - call.count('\n'))
        out.append(s[pos:start])
        out.append(call)
        pos = end
        n += 1
    out.append(s[pos:])
    return ''.join(out), n


def main():
    src, dst = sys.argv[1], sys.argv[2]
    text = open(src).read()
    body, _ = rewrite(text)
    with open(dst, 'w') as f:
        f.write('#line 1 "%s"\n' % src)
        f.write(body)


if __name__ == '__main__':
    main()
