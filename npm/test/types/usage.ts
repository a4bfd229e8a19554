// Type-checked by `tsc` in the packaging test (npm/test/packaging.test.mjs), never run: every
// export of the package used with its declared types, through the package's own name and
// `exports` map (as an app resolves it), plus misuses that must not compile.
import {
  alias,
  captureOutboundLinks,
  captureWebVitals,
  flush,
  group,
  identify,
  init,
  optIn,
  optOut,
  page,
  register,
  reset,
  track,
  unregister,
  type InitOptions,
  type Properties,
  type SentEvent,
} from '@nexus-analytics/browser';

const options: InitOptions = {
  key: 'wk_types',
  endpoint: 'https://collect.example.com',
  flushAt: 20,
  flushIntervalMs: 5000,
  debug: false,
  cookieless: false,
  sampleRate: 0.5,
  consent: 'pending',
  respectDnt: true,
  spa: true,
  beforeSend(event: SentEvent): SentEvent | null {
    const name: string | undefined = event.name;
    return name === 'secret' ? null : { ...event, properties: { ...event.properties, edited: true } };
  },
};

async function app(): Promise<void> {
  captureOutboundLinks();
  captureWebVitals();
  const ready: Promise<void> = init(options);
  await ready;
  const props: Properties = { plan: 'pro', seats: 3, nested: { ok: true } };
  track('signup_clicked', props);
  track('no_properties');
  page();
  page({ section: 'pricing' });
  identify('user-1', { email: 'a@example.com' });
  alias('user-2');
  alias('user-2', 'user-1');
  group('company', 'acme', { seats: 5 });
  register({ app: 'web' });
  unregister('app');
  optIn();
  optOut();
  reset();
  const flushed: Promise<void> = flush();
  await flushed;

  // Misuses the types must refuse: each line below fails to compile, so a declaration that
  // loosened (an `any`) would make its `@ts-expect-error` unused, itself a tsc error.
  // @ts-expect-error a name is required
  track();
  // @ts-expect-error the write key is required
  void init({ endpoint: 'https://collect.example.com' });
  // @ts-expect-error consent is 'pending' or 'granted'
  void init({ key: 'k', consent: 'maybe' });
  // @ts-expect-error track() returns nothing to await on
  const nothing: Promise<void> = track('x');
  void nothing;
}

void app();
