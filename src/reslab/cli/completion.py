"""``reslab completion bash|zsh``: a shell completion script generated from the real parsers.

    source <(reslab completion bash)              # in ~/.bashrc
    source <(reslab completion zsh)               # in ~/.zshrc (uses zsh's bashcompinit)

Verbs, each verb's flags, sub-commands (``experiment``) and the choices of flags such as
``--precision`` complete; anything else completes as a file name.
"""

from __future__ import annotations

import argparse
import shlex


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")


def verb_words(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str]]]:
    """A parser's option strings (and sub-command names), and the choices of each flag."""
    words: list[str] = []
    choices: dict[str, list[str]] = {}
    for action in parser._actions:  # argparse has no public API for walking its actions
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            words += list(action.choices)
            for sub in action.choices.values():
                sub_words, sub_choices = verb_words(sub)
                words += sub_words
                choices.update(sub_choices)
            continue
        words += list(action.option_strings)
        if action.option_strings and action.choices:
            for flag in action.option_strings:
                choices[flag] = [str(c) for c in action.choices]
    return sorted(set(words)), choices


def bash_script() -> str:
    """The bash completion function ``_reslab`` and its ``complete`` line."""
    from reslab.cli.main import COMMANDS, build_verb_parser

    verb_cases, flag_cases = [], []
    for name in COMMANDS:
        words, choices = verb_words(build_verb_parser(name))
        verb_cases.append(f"        {name}) words={shlex.quote(' '.join(words))} ;;")
        for flag, values in choices.items():  # the same flag may offer other choices elsewhere
            reply = f"COMPREPLY=($(compgen -W {shlex.quote(' '.join(values))} -- \"$cur\"))"
            flag_cases.append(f"        {shlex.quote(f'{name} {flag}')}) {reply}; return ;;")
    return "\n".join([
        "# reslab completion for bash: source <(reslab completion bash)",
        "_reslab() {",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local verb="${COMP_WORDS[1]}" words=""',
        "    if [ \"$COMP_CWORD\" -eq 1 ]; then",
        f"        COMPREPLY=($(compgen -W {shlex.quote(' '.join(COMMANDS))} -- \"$cur\")); return",
        "    fi",
        '    case "$verb $prev" in',
        *flag_cases,
        "    esac",
        '    case "$verb" in',
        *verb_cases,
        "    esac",
        '    if [[ "$cur" == -* || "$verb" == experiment && "$COMP_CWORD" -eq 2 ]]; then',
        '        COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        "    else",
        '        COMPREPLY=($(compgen -f -- "$cur"))',
        "    fi",
        "}",
        "complete -o filenames -F _reslab reslab",
        "",
    ])  # fmt: skip


def zsh_script() -> str:
    """zsh runs the bash function through its bashcompinit layer."""
    return "\n".join([
        "#compdef reslab",
        "# reslab completion for zsh: source <(reslab completion zsh)",
        "autoload -U +X compinit && compinit",
        "autoload -U +X bashcompinit && bashcompinit",
        bash_script(),
    ])  # fmt: skip


def run(args: argparse.Namespace) -> int:
    print(bash_script() if args.shell == "bash" else zsh_script())
    return 0
