/**
 * A small XML reader for the documents `gluster --xml` prints: elements, attributes, text,
 * self-closing tags, the five predefined entities and numeric character references. Mixed
 * content (gluster's `<brick>` holds text and child elements) keeps the direct text. No DTDs,
 * namespaces or CDATA: gluster emits none, and anything unexpected is an error rather than a
 * silent misread.
 */

export interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  /** Direct text content, entities decoded, trimmed. */
  text: string;
}

export class XmlError extends Error {}

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function decode(raw: string): string {
  return raw.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);/g, (whole, ref: string) => {
    if (ref.startsWith('#x')) return String.fromCodePoint(parseInt(ref.slice(2), 16));
    if (ref.startsWith('#')) return String.fromCodePoint(parseInt(ref.slice(1), 10));
    const named = ENTITIES[ref];
    if (named === undefined) throw new XmlError(`unknown entity ${whole}`);
    return named;
  });
}

const NAME = /[A-Za-z_][\w.:-]*/y;
const ATTRIBUTE = /\s+([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/y;

/** Parses a whole document and returns its root element. */
export function parseXml(input: string): XmlElement {
  let pos = 0;
  const fail = (what: string): never => {
    throw new XmlError(`${what} at offset ${pos}`);
  };
  const skipMisc = () => {
    for (;;) {
      const ws = /\s*/y;
      ws.lastIndex = pos;
      ws.exec(input);
      pos = ws.lastIndex;
      if (input.startsWith('<?', pos)) {
        const end = input.indexOf('?>', pos);
        if (end < 0) fail('unterminated processing instruction');
        pos = end + 2;
      } else if (input.startsWith('<!--', pos)) {
        const end = input.indexOf('-->', pos);
        if (end < 0) fail('unterminated comment');
        pos = end + 3;
      } else {
        return;
      }
    }
  };
  const readName = (): string => {
    NAME.lastIndex = pos;
    const match = NAME.exec(input);
    if (!match) return fail('expected a name');
    pos = NAME.lastIndex;
    return match[0];
  };

  const readElement = (): XmlElement => {
    if (input[pos] !== '<') fail('expected an element');
    pos += 1;
    const element: XmlElement = { name: readName(), attributes: {}, children: [], text: '' };
    for (;;) {
      ATTRIBUTE.lastIndex = pos;
      const attr = ATTRIBUTE.exec(input);
      if (!attr) break;
      element.attributes[attr[1]!] = decode(attr[2] ?? attr[3] ?? '');
      pos = ATTRIBUTE.lastIndex;
    }
    while (/\s/.test(input[pos] ?? '')) pos += 1;
    if (input.startsWith('/>', pos)) {
      pos += 2;
      return element;
    }
    if (input[pos] !== '>') fail(`malformed start tag <${element.name}>`);
    pos += 1;
    let text = '';
    for (;;) {
      const next = input.indexOf('<', pos);
      if (next < 0) fail(`unterminated element <${element.name}>`);
      text += input.slice(pos, next);
      pos = next;
      if (input.startsWith('</', pos)) {
        pos += 2;
        const closing = readName();
        if (closing !== element.name) fail(`</${closing}> closes <${element.name}>`);
        while (/\s/.test(input[pos] ?? '')) pos += 1;
        if (input[pos] !== '>') fail(`malformed end tag </${closing}>`);
        pos += 1;
        element.text = decode(text).trim();
        return element;
      }
      if (input.startsWith('<!--', pos)) {
        const end = input.indexOf('-->', pos);
        if (end < 0) fail('unterminated comment');
        pos = end + 3;
        continue;
      }
      element.children.push(readElement());
    }
  };

  skipMisc();
  const root = readElement();
  skipMisc();
  if (pos !== input.length) fail('content after the root element');
  return root;
}

export function childOf(element: XmlElement, name: string): XmlElement | undefined {
  return element.children.find((c) => c.name === name);
}

export function childrenOf(element: XmlElement, name: string): XmlElement[] {
  return element.children.filter((c) => c.name === name);
}

/** Text of the first child called `name`, or undefined when there is none. */
export function textOf(element: XmlElement, name: string): string | undefined {
  return childOf(element, name)?.text;
}

/** Follows a path of child names, e.g. `pathOf(root, 'volInfo', 'volumes')`. */
export function pathOf(element: XmlElement, ...names: string[]): XmlElement | undefined {
  let current: XmlElement | undefined = element;
  for (const name of names) current = current && childOf(current, name);
  return current;
}
