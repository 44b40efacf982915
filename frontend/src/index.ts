/**
 * Entry point of the Streamlit Components v2 element (the bundle's default export). Streamlit
 * calls it on mount and again whenever `data` changes; the viewer lives once per parentElement
 * (a WeakMap), keeps its volume across those calls, and is destroyed on unmount.
 */
import { Workstation } from "./workstation";

interface ComponentArgs {
  data: unknown;
  parentElement: HTMLElement | ShadowRoot;
  setStateValue: (name: string, value: unknown) => void;
  setTriggerValue: (name: string, value: unknown) => void;
}

const instances = new WeakMap<object, Workstation>();

export default function render(args: ComponentArgs): () => void {
  const { parentElement, data, setStateValue, setTriggerValue } = args;
  let ws = instances.get(parentElement);
  if (!ws) {
    ws = new Workstation(parentElement);
    instances.set(parentElement, ws);
  }
  ws.bind(setStateValue, setTriggerValue);
  ws.receive(data);
  const mine = ws;
  return () => {
    mine.destroy();
    instances.delete(parentElement);
  };
}
