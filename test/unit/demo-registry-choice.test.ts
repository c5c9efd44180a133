import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { REGISTRY_ENV, RegistryChoiceError, chooseRegistry } from '../../src/demo/registry-choice.js';

describe('the demo chooses its registry', () => {
  test('etcd when etcd and etcdctl are installed and nothing is requested', () => {
    const c = chooseRegistry(undefined, {}, []);
    assert.equal(c.registry, 'etcd');
    assert.match(c.reason, /installed/);
    assert.match(c.reason, new RegExp(`${REGISTRY_ENV}=file`));
  });

  test('the file registry when etcd is missing, naming what is missing', () => {
    const c = chooseRegistry(undefined, {}, ['etcd']);
    assert.equal(c.registry, 'file');
    assert.match(c.reason, /etcd is not installed/);
    assert.match(c.reason, /--kv-file/);
  });

  test(`${REGISTRY_ENV}=file forces the file registry even with etcd installed`, () => {
    const c = chooseRegistry(undefined, { [REGISTRY_ENV]: 'file' }, []);
    assert.equal(c.registry, 'file');
    assert.match(c.reason, new RegExp(`${REGISTRY_ENV}=file`));
  });

  test('--registry wins over the environment; auto and empty mean the default', () => {
    assert.equal(chooseRegistry('etcd', { [REGISTRY_ENV]: 'file' }, []).registry, 'etcd');
    assert.equal(chooseRegistry('FILE', { [REGISTRY_ENV]: 'etcd' }, []).registry, 'file');
    assert.equal(chooseRegistry('auto', {}, ['etcdctl']).registry, 'file');
    assert.equal(chooseRegistry(undefined, { [REGISTRY_ENV]: '' }, []).registry, 'etcd');
  });

  test('etcd requested but not installed, or an unknown value: one clear error', () => {
    assert.throws(
      () => chooseRegistry(undefined, { [REGISTRY_ENV]: 'etcd' }, ['etcd', 'etcdctl']),
      (e: unknown) =>
        e instanceof RegistryChoiceError &&
        /etcd and etcdctl are not installed/.test(e.message) &&
        /apt-get install etcd-server/.test(e.message),
    );
    assert.throws(
      () => chooseRegistry('consul', {}, []),
      (e: unknown) =>
        e instanceof RegistryChoiceError && /--registry must be etcd, file or auto, not "consul"/.test(e.message),
    );
    assert.throws(() => chooseRegistry(undefined, { [REGISTRY_ENV]: 'x' }, []), RegistryChoiceError);
  });
});
